//! Where the client keeps its auth token between connections (SocketCluster's client auth
//! engine): in memory by default, or in a file for command-line tools.

use alloc::string::String;
use core::fmt;
use std::path::PathBuf;

use crate::sync::Mutex;

/// Stores the client's signed auth token. The client loads it before every handshake, saves
/// the token it is given (`#setAuthToken`, `authenticate`) and removes it when it is
/// deauthenticated or the server rejects it.
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// The stored token.
    fn load(&self) -> Option<String>;
    /// Stores `token`. A failure is reported as the client's `error` event; the client stays
    /// authenticated.
    fn save(&self, token: &str) -> Result<(), String>;
    /// Forgets the token.
    fn remove(&self);
}

/// Keeps the token in memory (the default): it lives as long as the client.
#[derive(Debug, Default)]
pub struct MemoryTokenStore(Mutex<Option<String>>);

impl MemoryTokenStore {
    /// An empty store, or one holding `token`.
    pub fn new(token: Option<String>) -> Self {
        Self(Mutex::new(token))
    }
}

impl TokenStore for MemoryTokenStore {
    fn load(&self) -> Option<String> {
        self.0.lock().clone()
    }

    fn save(&self, token: &str) -> Result<(), String> {
        *self.0.lock() = Some(String::from(token));
        Ok(())
    }

    fn remove(&self) {
        *self.0.lock() = None;
    }
}

/// Keeps the token in a file, so a command-line tool stays logged in across runs.
///
/// ```
/// use socketcluster::client::{FileTokenStore, TokenStore};
/// let path = std::env::temp_dir().join(format!("sc-token-doc-{}", std::process::id()));
/// let store = FileTokenStore::new(&path);
/// store.save("a.b.c").unwrap();
/// assert_eq!(FileTokenStore::new(&path).load().as_deref(), Some("a.b.c"));
/// store.remove();
/// assert_eq!(store.load(), None);
/// ```
#[derive(Debug, Clone)]
pub struct FileTokenStore {
    path: PathBuf,
}

impl FileTokenStore {
    /// A store in the file at `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl TokenStore for FileTokenStore {
    fn load(&self) -> Option<String> {
        let t = std::fs::read_to_string(&self.path).ok()?;
        let t = t.trim();
        (!t.is_empty()).then(|| String::from(t))
    }

    fn save(&self, token: &str) -> Result<(), String> {
        std::fs::write(&self.path, token).map_err(|e| alloc::format!("cannot save the auth token: {e}"))
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
