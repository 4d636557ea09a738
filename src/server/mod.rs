//! `atelier serve`: a web page and an HTTP API on the same engine as the app and the CLI.
//!
//! Layout: [`catalog`] lists the styles a client may pick, [`upload`] reads a job's multipart
//! form within the limits, [`jobs`] keeps the jobs' states (fed by the engine's events on a
//! thread of its own) and their results on disk until they expire, [`api`] is the router, with
//! [`openapi`] its description and `page.html` the page it serves at `/`.
//!
//! Jobs run on the engine's queued render lane, one after another; the HTTP side never computes
//! anything but image headers, decoding (on the blocking pool) and encodings of finished images.

mod api;
mod catalog;
mod error;
mod jobs;
mod openapi;
mod upload;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{self, Engine, EngineError};

pub use catalog::{Catalog, CatalogStyle};

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8731";

/// What `atelier serve` is started with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Every API call must carry it (`Authorization: Bearer T`, or `?token=T`).
    pub token: Option<String>,
    /// Allow an address beyond loopback (a token is then required too).
    pub public: bool,
    /// Largest request body (photo, painting and fields together).
    pub max_upload_bytes: usize,
    /// Largest photo or painting, in pixels, checked from the image header before decoding.
    pub max_pixels: u64,
    /// Jobs queued or running at most; more are answered 503 with Retry-After.
    pub queue: usize,
    /// How long a finished job's result stays available.
    pub keep: Duration,
    /// A request whose body has not arrived within this time is answered 408.
    pub upload_timeout: Duration,
    /// Bundled styles (`NAME/style.toml` folders).
    pub styles_dir: PathBuf,
    /// VGG for the optimisation method (default: as the CLI finds it, else the built-in VGG16).
    pub vgg: Option<PathBuf>,
    /// Longest side of a result; bigger photos are scaled down to it.
    pub max_side: u32,
    /// Optimisation steps at most per job.
    pub max_steps: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8731)),
            token: None,
            public: false,
            max_upload_bytes: 32 << 20,
            max_pixels: 40_000_000,
            queue: 32,
            keep: Duration::from_secs(30 * 60),
            upload_timeout: Duration::from_secs(60),
            styles_dir: crate::styles::default_styles_dir(),
            vgg: None,
            max_side: 4096,
            max_steps: 500,
        }
    }
}

/// Why the server did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{0} is not a loopback address: serving beyond this machine needs --public and a --token"
    )]
    PublicNeedsFlag(SocketAddr),
    #[error("--public needs a --token: anyone who can reach {0} could otherwise use the server")]
    PublicNeedsToken(SocketAddr),
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create a folder for results: {0}")]
    ResultsDir(std::io::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
}

impl ServeConfig {
    fn validate(&self) -> Result<(), ServeError> {
        if !self.addr.ip().is_loopback() {
            if !self.public {
                return Err(ServeError::PublicNeedsFlag(self.addr));
            }
            if self.token.as_deref().is_none_or(str::is_empty) {
                return Err(ServeError::PublicNeedsToken(self.addr));
            }
        }
        if self.token.as_deref() == Some("") {
            return Err(ServeError::InvalidSetting("--token is empty".into()));
        }
        if self.queue == 0 {
            return Err(ServeError::InvalidSetting(
                "--queue must be at least 1".into(),
            ));
        }
        if self.max_upload_bytes < 1024 {
            return Err(ServeError::InvalidSetting(
                "--max-upload-mb is too small for any photo".into(),
            ));
        }
        if self.max_side < 16 {
            return Err(ServeError::InvalidSetting(
                "--max-side must be at least 16".into(),
            ));
        }
        Ok(())
    }
}

/// A server bound to its address, not yet answering.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<api::ServerState>,
}

impl Server {
    /// Checks the settings, starts the engine and binds the address (port 0 picks a free port;
    /// see [`Server::local_addr`]). Must be called inside a tokio runtime.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.addr,
                source,
            })?;
        let catalog = Catalog::load(&config.styles_dir);
        for problem in &catalog.problems {
            tracing::warn!("style skipped: {problem}");
        }
        let vgg = engine::resolve_vgg(config.vgg.as_deref())
            .unwrap_or_else(|_| PathBuf::from(engine::BUNDLED_VGG));
        // Low priority, as in the app: the HTTP threads stay responsive while jobs compute.
        let engine = Engine::new_background(engine::best_device())?;
        let results = tempfile::Builder::new()
            .prefix("atelier-serve-")
            .tempdir()
            .map_err(ServeError::ResultsDir)?;
        let state = api::ServerState::start(config, catalog, vgg, engine, results);
        Ok(Self { listener, state })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    /// Answers requests until `shutdown` completes, then cancels the engine's jobs (so their
    /// event streams end), lets open requests finish for a few seconds and removes the results.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let reaper = tokio::spawn(jobs::reap_expired(self.state.jobs.clone()));
        let router = api::router(self.state.clone());
        let jobs = self.state.jobs.clone();
        let stop = async move {
            shutdown.await;
            // Cancelled jobs end their event streams, so open requests can finish.
            jobs.shutdown();
        };
        let serving = axum::serve(self.listener, router).with_graceful_shutdown(stop);
        serving.await?;
        reaper.abort();
        self.state.jobs.shutdown();
        Ok(())
    }
}
