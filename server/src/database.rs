//! Which database a server uses, from `--database`: the embedded SQLite file or a PostgreSQL
//! server, and opening it as a [`Store`]. Above the store: it knows both backends, which know
//! only the store's interface.

use std::sync::Arc;

use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreResult};

/// Which database a server uses, from `--database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL (shared by replicas).
    Postgres(String),
}

impl Database {
    /// `postgres://` or `postgresql://` is PostgreSQL; `sqlite://PATH` or a plain path is a
    /// SQLite file; nothing is `<data_dir>/ocx.db`.
    pub fn parse(spec: Option<&str>, data_dir: &std::path::Path) -> Database {
        match spec {
            None | Some("") => Database::Sqlite(data_dir.join("ocx.db")),
            Some(s)
                if s.to_ascii_lowercase().starts_with("postgres://")
                    || s.to_ascii_lowercase().starts_with("postgresql://") =>
            {
                Database::Postgres(s.to_owned())
            }
            Some(s) => Database::Sqlite(s.strip_prefix("sqlite://").unwrap_or(s).into()),
        }
    }

    /// Opens (creating or migrating) the database.
    pub async fn open(&self, options: PgOptions) -> StoreResult<Arc<dyn Store>> {
        Ok(match self {
            Database::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
            Database::Postgres(url) => Arc::new(PgStore::connect(url, options).await?),
        })
    }
}

/// Shown in logs and errors: the file, or the PostgreSQL server and database without the user
/// or password.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
                let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
                write!(f, "postgres://{rest}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Database;

    #[test]
    fn database_specs_choose_the_backend_and_display_without_secrets() {
        let dir = std::path::Path::new("d");
        assert_eq!(
            Database::parse(None, dir),
            Database::Sqlite(dir.join("ocx.db"))
        );
        assert_eq!(
            Database::parse(Some("sqlite:///x/y.db"), dir),
            Database::Sqlite("/x/y.db".into())
        );
        assert_eq!(
            Database::parse(Some("y.db"), dir),
            Database::Sqlite("y.db".into())
        );
        let pg = Database::parse(
            Some("postgresql://ocx:s3cret@db:5432/ocx?sslmode=disable"),
            dir,
        );
        assert!(matches!(pg, Database::Postgres(_)));
        assert_eq!(pg.to_string(), "postgres://db:5432/ocx");
        assert!(matches!(
            Database::parse(Some("POSTGRES://u:p@h/d"), dir),
            Database::Postgres(_)
        ));
    }
}
