//! Number events: one `WatchNumberEvents` call as a stream, and a follower that reconnects and
//! resumes after the last sequence it yielded, so a caller sees every event once, in order (the
//! follower itself is the generic one in `follow`).

use futures_util::{Stream, StreamExt};
use tonic::codec::Streaming;

use crate::follow::{self, Feed};
use ocx_api::pb;

use crate::client::Client;
use crate::error::{Error, Result};

impl Client {
    /// One `WatchNumberEvents` call, no reconnect: yields the events with a sequence greater
    /// than `after_sequence`, then new ones as they are committed, until the server ends the
    /// stream. A failure mid-stream is the last item.
    ///
    /// `carrier_id`: empty (or its own id) for a carrier key; required for a platform key.
    pub async fn watch_number_events(
        &self,
        carrier_id: &str,
        after_sequence: i64,
    ) -> Result<impl Stream<Item = Result<pb::NumberEvent>> + Send + 'static> {
        let messages = self.open_watch(carrier_id, after_sequence).await?;
        Ok(messages.map(|message| message?.event.ok_or_else(|| Error::missing("event"))))
    }

    /// Follows the events forever. On a retryable failure (transport error, status
    /// `UNAVAILABLE`, `UNKNOWN`, `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`,
    /// `RESOURCE_EXHAUSTED`, `INTERNAL` raised by the transport rather than sent by the server, or
    /// the stream ending cleanly) it reconnects with exponential backoff (100 ms doubling to 5 s,
    /// reset after each event) and resumes after the last sequence it yielded, so the caller sees
    /// every event exactly once and in order. Any other status (`UNAUTHENTICATED`,
    /// `PERMISSION_DENIED`, `INVALID_ARGUMENT`, `NOT_FOUND`, ...) is yielded as the last item.
    ///
    /// Reconnects are logged at `warn` through `tracing`.
    pub fn follow_number_events(
        &self,
        carrier_id: &str,
        after_sequence: i64,
    ) -> impl Stream<Item = Result<pb::NumberEvent>> + Send + 'static {
        let client = self.clone();
        let carrier = carrier_id.to_owned();
        let feed = Feed {
            name: "number events",
            carrier_id: carrier_id.to_owned(),
            connect: move |after_sequence| {
                let (client, carrier) = (client.clone(), carrier.clone());
                async move { client.open_watch(&carrier, after_sequence).await }
            },
            unpack: |message: pb::WatchNumberEventsResponse| {
                Ok(vec![message.event.ok_or_else(|| Error::missing("event"))?])
            },
            sequence: |event: &pb::NumberEvent| event.sequence,
        };
        follow::follow(feed, after_sequence)
    }

    /// Starts one `WatchNumberEvents` call, keeping the raw status so that the follower can tell
    /// transport failures from answers.
    async fn open_watch(
        &self,
        carrier_id: &str,
        after_sequence: i64,
    ) -> Result<Streaming<pb::WatchNumberEventsResponse>, tonic::Status> {
        let request = self.request(pb::WatchNumberEventsRequest {
            carrier_id: carrier_id.to_owned(),
            after_sequence,
        });
        Ok(self
            .number_service()
            .watch_number_events(request)
            .await?
            .into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use tonic::Code;

    use pb::number_service_server::{NumberService, NumberServiceServer};
    use tonic::{Request, Response, Status};

    type Reply = Result<pb::WatchNumberEventsResponse, Status>;

    /// A NumberService whose only working RPC replays a script: call `n` of WatchNumberEvents
    /// returns `script[n]` (the last entry for any later call), and records `after_sequence`.
    struct Scripted {
        /// The replies of each call, in call order.
        script: Vec<Vec<Reply>>,
        /// `after_sequence` of each call, for the test to check the resume points.
        calls: Arc<Mutex<Vec<i64>>>,
    }

    fn event(sequence: i64) -> Reply {
        Ok(pb::WatchNumberEventsResponse {
            event: Some(pb::NumberEvent {
                sequence,
                ..Default::default()
            }),
        })
    }

    #[tonic::async_trait]
    impl NumberService for Scripted {
        async fn upload_numbers(
            &self,
            _: Request<pb::UploadNumbersRequest>,
        ) -> Result<Response<pb::UploadNumbersResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn release_numbers(
            &self,
            _: Request<pb::ReleaseNumbersRequest>,
        ) -> Result<Response<pb::ReleaseNumbersResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn get_number(
            &self,
            _: Request<pb::GetNumberRequest>,
        ) -> Result<Response<pb::GetNumberResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn list_numbers(
            &self,
            _: Request<pb::ListNumbersRequest>,
        ) -> Result<Response<pb::ListNumbersResponse>, Status> {
            Err(Status::unimplemented("test"))
        }

        type WatchNumberEventsStream = Pin<Box<dyn Stream<Item = Reply> + Send>>;

        async fn watch_number_events(
            &self,
            request: Request<pb::WatchNumberEventsRequest>,
        ) -> Result<Response<Self::WatchNumberEventsStream>, Status> {
            let auth = request.metadata().get(ocx_api::metadata::AUTHORIZATION);
            if auth.and_then(|v| v.to_str().ok()) != Some("Bearer k") {
                return Err(Status::unauthenticated("wrong key"));
            }
            let mut calls = self.calls.lock().expect("not poisoned");
            calls.push(request.get_ref().after_sequence);
            let n = (calls.len() - 1).min(self.script.len() - 1);
            Ok(Response::new(Box::pin(stream::iter(
                self.script[n].clone(),
            ))))
        }
    }

    /// Serves `script` on a loopback port; returns a client with key `k` and the call log.
    async fn serve(script: Vec<Vec<Reply>>) -> (Client, Arc<Mutex<Vec<i64>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let service = Scripted {
            script,
            calls: calls.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(NumberServiceServer::new(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let client = Client::connect(format!("http://{addr}"), "k")
            .await
            .expect("connect");
        (client, calls)
    }

    #[tokio::test]
    async fn follow_resumes_after_the_last_event_and_skips_replays() {
        let (client, calls) = serve(vec![
            // Ends cleanly: reconnect.
            vec![event(1), event(2)],
            // Replays 2 (must not be seen twice), then a retryable failure.
            vec![event(2), event(3), Err(Status::unavailable("restarting"))],
            // Then a failure that must end the stream.
            vec![event(4), Err(Status::permission_denied("key revoked"))],
        ])
        .await;

        let items: Vec<_> = client.follow_number_events("c", 0).collect().await;
        let sequences: Vec<i64> = items
            .iter()
            .filter_map(|item| item.as_ref().ok().map(|e| e.sequence))
            .collect();
        assert_eq!(sequences, [1, 2, 3, 4]);
        assert_eq!(items.len(), 5, "one error after the events: {items:?}");
        assert_eq!(
            items
                .last()
                .and_then(|i| i.as_ref().err())
                .and_then(Error::code),
            Some(Code::PermissionDenied)
        );
        assert_eq!(*calls.lock().expect("not poisoned"), [0, 2, 3]);
    }

    #[tokio::test]
    async fn follow_ends_at_once_when_unauthenticated() {
        let (client, calls) = serve(vec![vec![event(1)]]).await;
        let client = client.with_key("wrong").expect("valid header");
        let items: Vec<_> = client.follow_number_events("c", 7).collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].as_ref().err().and_then(Error::code),
            Some(Code::Unauthenticated)
        );
        assert!(calls.lock().expect("not poisoned").is_empty());
    }

    #[tokio::test]
    async fn watch_ends_with_the_server() {
        let (client, _) = serve(vec![vec![event(5), event(6)]]).await;
        let events: Vec<_> = client
            .watch_number_events("c", 4)
            .await
            .expect("watch opens")
            .collect()
            .await;
        let sequences: Vec<i64> = events
            .into_iter()
            .map(|e| e.expect("no error").sequence)
            .collect();
        assert_eq!(sequences, [5, 6]);
    }
}
