//! API keys and authentication.
//!
//! A key is the token `ocx_<key_id>_<secret>`: `key_id` is 16 hex characters, public, and
//! indexes the key; `secret` is 64 hex characters (256 random bits). Only SHA-256(secret) is
//! stored. A salted slow hash (argon2, bcrypt) protects low-entropy passwords; a 256-bit random
//! secret cannot be brute-forced, so one SHA-256 is the standard choice here (as for GitHub or
//! Stripe tokens), and it keeps authentication cheap on every call. Hashes are compared in
//! constant time.
//!
//! [`KeyCache`] holds every active key in memory so that the gate never touches the
//! database; the admin service updates it after each committed create or revoke, so a revoked
//! key fails on its very next call. Last-use times are kept in memory and flushed to the store
//! by [`KeyCache::flush_uses`] (about once a minute). With replicas sharing a PostgreSQL
//! database, the store signals key changes made through other replicas and the cache reloads
//! ([`KeyCache::reload`]): a key revoked on one replica fails on the others as soon as the
//! notification arrives (milliseconds).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::domain::{ApiKey, Micros, Role, now_micros};
use crate::store::{Store, StoreResult};

/// Prefix of every token, so a leaked token is recognisable by secret scanners.
const TOKEN_PREFIX: &str = "ocx_";

/// Who is calling: what the gate puts in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The calling platform.
    Platform {
        /// The key used (for audit and logs; never the secret).
        key_id: String,
    },
    /// One carrier.
    Carrier {
        /// The key used.
        key_id: String,
        /// The carrier the key belongs to: the carrier's whole scope.
        carrier_id: String,
    },
}

/// A new key: its record (to store) and the token (to show once).
#[derive(Debug)]
pub struct IssuedKey {
    /// The record to store (holds only the hash).
    pub record: ApiKey,
    /// `ocx_<key_id>_<secret>`, shown to the caller once.
    pub token: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS random source failing is unrecoverable for a service that issues secrets.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    hex::encode(buf)
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Makes a new key for `role` (and `carrier_id` for carrier keys).
pub fn issue_key(role: Role, carrier_id: Option<String>, display_name: String) -> IssuedKey {
    let key_id = random_hex(8);
    let secret = random_hex(32);
    let token = format!("{TOKEN_PREFIX}{key_id}_{secret}");
    let record = ApiKey {
        key_id,
        role,
        carrier_id,
        display_name,
        secret_hash: hash_secret(&secret),
        create_time: now_micros(),
        last_use_time: None,
        revoke_time: None,
    };
    IssuedKey { record, token }
}

/// Splits a token into key id and secret, if it has the right shape.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (key_id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(key_id, 16) && hex(secret, 64)).then_some((key_id, secret))
}

/// An active key as the cache keeps it.
struct CachedKey {
    /// SHA-256 of the secret.
    hash: [u8; 32],
    /// Who the key speaks for.
    principal: Principal,
    /// Last authenticated use (micros), 0 if never.
    last_use: AtomicI64,
    /// The last-use time last written to the store.
    flushed: AtomicI64,
}

/// Every active key, in memory. A std `RwLock`: it is held only for a map lookup or insert,
/// never across `.await`, and the lookups that read it are synchronous.
#[derive(Default)]
pub struct KeyCache {
    /// Active keys by key id.
    keys: RwLock<HashMap<String, Arc<CachedKey>>>,
}

impl KeyCache {
    /// A cache filled with the store's active keys.
    pub async fn load(store: &dyn Store) -> StoreResult<KeyCache> {
        let cache = KeyCache::default();
        for key in store.active_api_keys().await? {
            cache.insert(&key);
        }
        Ok(cache)
    }

    /// Makes the cache hold exactly the store's active keys (after another replica created or
    /// revoked one). Keys it already holds keep their in-memory last-use times.
    pub async fn reload(&self, store: &dyn Store) -> StoreResult<()> {
        let active = store.active_api_keys().await?;
        let ids: std::collections::HashSet<&str> =
            active.iter().map(|k| k.key_id.as_str()).collect();
        let missing: Vec<&ApiKey> = {
            let Ok(mut keys) = self.keys.write() else {
                return Ok(());
            };
            keys.retain(|id, _| ids.contains(id.as_str()));
            active
                .iter()
                .filter(|k| !keys.contains_key(&k.key_id))
                .collect()
        };
        for key in missing {
            self.insert(key);
        }
        Ok(())
    }

    /// Adds (or replaces) an active key.
    pub fn insert(&self, key: &ApiKey) {
        // Only the two consistent shapes grant anything; anything else is refused, loudly.
        let principal = match (key.role, &key.carrier_id) {
            (Role::Carrier, Some(carrier_id)) => Principal::Carrier {
                key_id: key.key_id.clone(),
                carrier_id: carrier_id.clone(),
            },
            (Role::Platform, None) => Principal::Platform {
                key_id: key.key_id.clone(),
            },
            (role, carrier) => {
                tracing::error!(key_id = %key.key_id, ?role, ?carrier, "inconsistent API key ignored");
                return;
            }
        };
        let last = key.last_use_time.unwrap_or(0);
        let cached = CachedKey {
            hash: key.secret_hash,
            principal,
            last_use: AtomicI64::new(last),
            flushed: AtomicI64::new(last),
        };
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(key.key_id.clone(), Arc::new(cached));
        }
    }

    /// Forgets a key (after its revocation committed).
    pub fn remove(&self, key_id: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.remove(key_id);
        }
    }

    /// The in-memory last-use time of a key, if newer than what the store has.
    pub fn last_use(&self, key_id: &str) -> Option<Micros> {
        let keys = self.keys.read().ok()?;
        let t = keys.get(key_id)?.last_use.load(Ordering::Relaxed);
        (t > 0).then_some(t)
    }

    /// Checks a bearer value (`Bearer ocx_..._...`) and returns the principal.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, Status> {
        let header = header.ok_or_else(|| {
            Status::unauthenticated(
                "missing API key: send the metadata 'authorization: Bearer <key>'",
            )
        })?;
        let token = ocx_api::metadata::bearer_token(header)
            .and_then(parse_token)
            .ok_or_else(|| {
                Status::unauthenticated(
                    "malformed authorization metadata: expected 'Bearer ocx_<key id>_<secret>'",
                )
            })?;
        let (key_id, secret) = token;
        let entry = self
            .keys
            .read()
            .ok()
            .and_then(|keys| keys.get(key_id).cloned());
        // Hash even when the key id is unknown, so timing does not tell which ids exist.
        let presented = hash_secret(secret);
        let entry = entry.filter(|e| bool::from(e.hash.ct_eq(&presented)));
        let entry = entry.ok_or_else(|| Status::unauthenticated("unknown or revoked API key"))?;
        entry.last_use.fetch_max(now_micros(), Ordering::Relaxed);
        Ok(entry.principal.clone())
    }

    /// Writes last-use times that changed since the previous flush.
    pub async fn flush_uses(&self, store: &dyn Store) -> StoreResult<()> {
        let dirty: Vec<(String, Micros)> = match self.keys.read() {
            Ok(keys) => keys
                .iter()
                .filter_map(|(id, k)| {
                    let t = k.last_use.load(Ordering::Relaxed);
                    (t > k.flushed.load(Ordering::Relaxed)).then(|| (id.clone(), t))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if dirty.is_empty() {
            return Ok(());
        }
        store.record_key_use(dirty.clone()).await?;
        // Marked flushed only once stored, so a failed write is retried on the next flush.
        if let Ok(keys) = self.keys.read() {
            for (id, t) in dirty {
                if let Some(k) = keys.get(&id) {
                    k.flushed.fetch_max(t, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Whether a key is still active (not revoked). Long-lived streams check it on every
    /// wake-up, so revoking a key also ends the streams it opened.
    pub fn is_active(&self, key_id: &str) -> bool {
        self.keys.read().is_ok_and(|keys| keys.contains_key(key_id))
    }
}

/// The principal the gate attached. Missing means a service was mounted without the gate: a
/// server bug, reported as UNAUTHENTICATED rather than served unauthenticated.
pub fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated principal"))
}

impl Principal {
    /// The key's id.
    pub fn key_id(&self) -> &str {
        match self {
            Principal::Platform { key_id } | Principal::Carrier { key_id, .. } => key_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_authenticate_and_others_do_not() {
        let cache = KeyCache::default();
        let issued = issue_key(Role::Carrier, Some("c1".into()), String::new());
        cache.insert(&issued.record);
        let ok = cache.authenticate(Some(&format!("Bearer {}", issued.token)));
        assert!(matches!(ok, Ok(Principal::Carrier { ref carrier_id, .. }) if carrier_id == "c1"));

        let mut wrong = issued.token.clone();
        let last = wrong
            .pop()
            .map_or('0', |c| if c == '0' { '1' } else { '0' });
        wrong.push(last);
        let err = cache.authenticate(Some(&format!("Bearer {wrong}"))).err();
        assert_eq!(err.map(|s| s.code()), Some(tonic::Code::Unauthenticated));

        for bad in [
            None,
            Some("Bearer"),
            Some("Basic abc"),
            Some("Bearer ocx_zz_yy"),
        ] {
            assert_eq!(
                cache.authenticate(bad).err().map(|s| s.code()),
                Some(tonic::Code::Unauthenticated)
            );
        }
        cache.remove(&issued.record.key_id);
        let revoked = cache
            .authenticate(Some(&format!("Bearer {}", issued.token)))
            .err();
        assert_eq!(
            revoked.map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
    }
}
