//! The `ocx-server` binary: parse flags, set up tracing, open the store, bind, call `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ocx_server::bootstrap;
use ocx_server::store::sqlite::SqliteStore;
use tracing_subscriber::EnvFilter;

/// OCX, the Operator Connect Exchange server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(
        long,
        env = "OCX_LISTEN",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    listen: SocketAddr,
    /// Directory for the database and the key files the server writes.
    #[arg(long, env = "OCX_DATA_DIR", default_value = "ocx-data", global = true)]
    data_dir: PathBuf,
    /// SQLite database file [default: <data-dir>/ocx.db].
    #[arg(long, env = "OCX_DATABASE", global = true)]
    database: Option<PathBuf>,
    /// Seed a demo carrier, tenants and numbers, and write its key to <data-dir>/demo-carrier.key.
    #[arg(long, env = "OCX_DEMO")]
    demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Create the database and the first platform key (<data-dir>/platform.key), then exit.
    Init,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating {}", cli.data_dir.display()))?;
    let db_path = cli
        .database
        .clone()
        .unwrap_or_else(|| cli.data_dir.join("ocx.db"));
    let store =
        SqliteStore::open(&db_path).with_context(|| format!("opening {}", db_path.display()))?;
    tracing::info!(database = %db_path.display(), "database open");
    match bootstrap::bootstrap_platform_key(&store, &cli.data_dir).await? {
        Some(path) => {
            tracing::info!(path = %path.display(), "first platform key written (shown nowhere else)")
        }
        None => tracing::debug!("a platform key already exists"),
    }
    if matches!(cli.command, Some(Command::Init)) {
        return Ok(());
    }
    if cli.demo {
        bootstrap::seed_demo(&store, &cli.data_dir).await?;
    }
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    ocx_server::run(listener, Arc::new(store), shutdown).await
}
