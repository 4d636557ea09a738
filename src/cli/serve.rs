//! `atelier serve`: the web page and HTTP API (see `atelier::server`), until Ctrl+C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use atelier::server::{ServeConfig, Server, DEFAULT_ADDR};
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Every API call must carry this token (`Authorization: Bearer T` or `?token=T`);
    /// default $ATELIER_TOKEN.
    #[arg(long)]
    pub token: Option<String>,
    /// Listen beyond loopback (needs --token).
    #[arg(long)]
    pub public: bool,
    /// Largest upload (photo, painting and fields) in megabytes.
    #[arg(long, default_value_t = 32)]
    pub max_upload_mb: usize,
    /// Largest photo or painting in megapixels (read from the header, before decoding).
    #[arg(long, default_value_t = 40.0)]
    pub max_megapixels: f64,
    /// Jobs waiting or running at most; more get 503 with Retry-After.
    #[arg(long, default_value_t = 32)]
    pub queue: usize,
    /// Minutes a finished result is kept before it is deleted.
    #[arg(long, default_value_t = 30.0)]
    pub keep_minutes: f64,
    /// Seconds a request body may take to arrive (a slower upload gets 408).
    #[arg(long, default_value_t = 60.0)]
    pub upload_timeout: f64,
    /// Longest side of a result in pixels.
    #[arg(long, default_value_t = 4096)]
    pub max_side: u32,
    /// Optimisation steps at most per job.
    #[arg(long, default_value_t = 500)]
    pub max_steps: usize,
    /// Bundled styles folder (default: as the app finds it).
    #[arg(long)]
    pub styles: Option<PathBuf>,
    /// VGG weights for the optimize method (default $ATELIER_VGG, the user cache, else the
    /// built-in VGG16).
    #[arg(long)]
    pub vgg: Option<PathBuf>,
}

fn seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{name} must be a positive number, got {value}"))
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !(args.max_megapixels > 0.0 && args.max_megapixels <= 1000.0) {
        anyhow::bail!(
            "--max-megapixels must be above 0 and at most 1000, got {}",
            args.max_megapixels
        );
    }
    let config = ServeConfig {
        addr: args.addr,
        token: args.token.or_else(|| {
            std::env::var("ATELIER_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
        }),
        public: args.public,
        max_upload_bytes: args.max_upload_mb.saturating_mul(1 << 20),
        max_pixels: (args.max_megapixels * 1e6) as u64,
        queue: args.queue,
        keep: seconds(args.keep_minutes * 60.0, "--keep-minutes")?,
        upload_timeout: seconds(args.upload_timeout, "--upload-timeout")?,
        styles_dir: args
            .styles
            .unwrap_or_else(atelier::styles::default_styles_dir),
        vgg: args.vgg,
        max_side: args.max_side,
        max_steps: args.max_steps,
    };
    let needs_token = config.token.is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("atelier-http")
        .build()
        .context("cannot start the server's runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let addr = server.local_addr()?;
        // The first line is the address, for scripts and tests that start on port 0. Written
        // without `println!`: a reader that closed the pipe must not stop the server.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}/");
        let _ = writeln!(
            out,
            "  the page: http://{addr}/   the API: http://{addr}/api/openapi.json{}",
            if needs_token {
                "   (API calls need the token)"
            } else {
                ""
            }
        );
        let _ = out.flush();
        drop(out);
        let stop = Arc::new(tokio::sync::Notify::new());
        let notify = stop.clone();
        super::interrupt::set_hook(
            "stopping: finishing open requests (Ctrl+C again quits at once)",
            move || notify.notify_one(),
        );
        server.run(async move { stop.notified().await }).await?;
        eprintln!("stopped");
        Ok(())
    })
}
