//! What the examples share: the server and the key, from the environment as the `ocx` tool
//! reads them.
//!
//! - `OCX_ENDPOINT`: the server (default `http://127.0.0.1:50051`);
//! - `OCX_KEY`, or `OCX_KEY_FILE` (a file holding the key): the carrier's API key.

// Each example uses what it needs of this module.
#![allow(dead_code)]

use std::path::Path;

/// A client for the server and key the environment names.
pub async fn connect() -> Result<ocx_client::Client, Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("OCX_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let key = match (std::env::var("OCX_KEY"), std::env::var("OCX_KEY_FILE")) {
        (Ok(key), _) => key,
        (_, Ok(file)) => std::fs::read_to_string(&file)?.trim().to_owned(),
        _ => return Err("set OCX_KEY or OCX_KEY_FILE to the carrier's API key".into()),
    };
    Ok(ocx_client::Client::connect(endpoint, key).await?)
}

/// Writes `text` to `path` so that a crash leaves the old file or the new one, never half of
/// one: a temporary file beside it, synced, then renamed over it.
pub fn save(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
