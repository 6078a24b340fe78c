//! The LISTEN connection: one per replica, outside the pool. It turns other replicas'
//! notifications (and this one's) into wake-ups of the local watchers ([`Signals`]); a write
//! announces itself with [`notify`] on a [`Channel`].
//!
//! If the connection drops, it reconnects with a growing pause (up to 5 s, back to 100 ms once
//! it listened again) and, once listening again, wakes every watcher: whatever was written
//! meanwhile is then read from the database. A connection that only listens never writes, so
//! a dead peer (a failover, a dropped NAT entry) would go unnoticed: every
//! [`HEARTBEAT`] it runs `SELECT 1`, and reconnects if that takes longer than [`HEARTBEAT_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, NoTls};

use deadpool_postgres::GenericClient;
use tokio::sync::watch;

use super::pool::{PgError, PgResult};

/// The LISTEN/NOTIFY channels.
#[derive(Debug, Clone, Copy)]
pub enum Channel {
    /// Number events were appended.
    NumberEvents,
    /// Call records were created or revised.
    CallRecords,
    /// An API key was created or revoked.
    ApiKeys,
    /// The pairing state of reconciliation changed.
    Reconciliation,
}

impl Channel {
    const ALL: [Channel; 4] = [
        Channel::NumberEvents,
        Channel::CallRecords,
        Channel::ApiKeys,
        Channel::Reconciliation,
    ];

    fn name(self) -> &'static str {
        match self {
            Channel::NumberEvents => "ocx_number_events",
            Channel::CallRecords => "ocx_call_records",
            Channel::ApiKeys => "ocx_api_keys",
            Channel::Reconciliation => "ocx_reconciliation",
        }
    }
}

/// Announces a change on `channel` to every replica when the transaction commits. PostgreSQL
/// folds identical notifications of one transaction into one.
pub async fn notify(tx: &impl GenericClient, channel: Channel) -> PgResult<()> {
    tx.batch_execute(&format!("NOTIFY {}", channel.name()))
        .await?;
    Ok(())
}

/// The wake-up channels of this replica.
#[derive(Debug)]
pub struct Signals {
    /// Number events were appended.
    pub number_events: watch::Sender<u64>,
    /// Call records were created or revised.
    pub call_records: watch::Sender<u64>,
    /// API keys were created or revoked.
    pub api_keys: watch::Sender<u64>,
    /// The pairing state changed.
    pub reconciliation: watch::Sender<u64>,
}

impl Signals {
    pub fn new() -> Signals {
        Signals {
            number_events: watch::channel(0).0,
            call_records: watch::channel(0).0,
            api_keys: watch::channel(0).0,
            reconciliation: watch::channel(0).0,
        }
    }

    fn sender(&self, channel: Channel) -> &watch::Sender<u64> {
        match channel {
            Channel::NumberEvents => &self.number_events,
            Channel::CallRecords => &self.call_records,
            Channel::ApiKeys => &self.api_keys,
            Channel::Reconciliation => &self.reconciliation,
        }
    }

    /// Wakes the watchers of `channel`.
    pub fn bump(&self, channel: Channel) {
        self.sender(channel).send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wakes everyone (after a gap in notifications).
    pub fn bump_all(&self) {
        for channel in Channel::ALL {
            self.bump(channel);
        }
    }
}

/// How often the listener checks that its connection is alive.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long the check may take before the connection counts as dead.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects, listens, and returns once the first LISTEN is in place, so that no write made
/// after the store is open can go unannounced. The task runs until aborted.
pub async fn start(
    config: tokio_postgres::Config,
    signals: Arc<Signals>,
) -> PgResult<tokio::task::JoinHandle<()>> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = tokio::spawn(run(config, signals, ready_tx));
    match ready_rx.await {
        Ok(Ok(())) => Ok(task),
        Ok(Err(e)) => {
            task.abort();
            Err(e)
        }
        Err(_) => Err(PgError::Store(crate::store::StoreError::Internal(
            "the listener stopped before listening".into(),
        ))),
    }
}

async fn run(
    config: tokio_postgres::Config,
    signals: Arc<Signals>,
    ready: oneshot::Sender<PgResult<()>>,
) {
    let mut ready = Some(ready);
    let mut pause = Duration::from_millis(100);
    loop {
        match listen_once(&config, &signals, &mut ready).await {
            Ok(()) => {
                tracing::warn!("the database listener's connection closed; reconnecting");
                pause = Duration::from_millis(100);
            }
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e));
                    return;
                }
                tracing::warn!(error = ?e, "the database listener failed; reconnecting");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life: LISTEN on every channel, then relay notifications until it ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    signals: &Signals,
    ready: &mut Option<oneshot::Sender<PgResult<()>>>,
) -> PgResult<()> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The connection must be polled for the client's queries to complete; the same poll
    // yields the notifications.
    let relay = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.channel().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the database listener's connection failed");
                    break;
                }
            }
        }
    });
    let statements: String = Channel::ALL
        .iter()
        .map(|c| format!("LISTEN {};", c.name()))
        .collect();
    if let Err(e) = client.batch_execute(&statements).await {
        relay.abort();
        return Err(e.into());
    }
    match ready.take() {
        Some(ready) => {
            let _ = ready.send(Ok(()));
        }
        // Listening again after a gap: anything may have been written meanwhile.
        None => signals.bump_all(),
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            channel = rx.recv() => {
                let Some(channel) = channel else { break };
                if let Some(c) = Channel::ALL.into_iter().find(|c| c.name() == channel) {
                    signals.bump(c);
                }
            }
            _ = heartbeat.tick() => {
                let alive = tokio::time::timeout(HEARTBEAT_TIMEOUT, client.simple_query("SELECT 1")).await;
                if !matches!(alive, Ok(Ok(_))) {
                    tracing::warn!("the database listener's connection stopped answering");
                    break;
                }
            }
        }
    }
    relay.abort();
    drop(client);
    Ok(())
}
