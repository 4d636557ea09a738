//! `atelier serve` for tests: the real binary on an ephemeral loopback port, a style folder of
//! small random networks, and a blocking HTTP client (ureq) with multipart forms.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde_json::Value;

use super::fixtures;

/// A running server, stopped (SIGTERM, then waited for) when dropped.
pub struct TestServer {
    pub base: String,
    pub child: Child,
    stderr_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts `atelier serve --addr 127.0.0.1:0 ARGS…` and waits for its address.
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr_log = dir.path().join("stderr.txt");
        let mut child = Command::new(env!("CARGO_BIN_EXE_atelier"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("ATELIER_TOKEN")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut first = String::new();
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut first).unwrap();
        // Keep reading what else it prints, so its stdout never becomes a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let base = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "server did not start: {first:?}; stderr: {}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                )
            })
            .trim_end_matches('/')
            .to_string();
        Self {
            base,
            child,
            stderr_log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Peak resident memory of the server process so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A styles folder with a random one-style network (`tiny`, with a thumbnail) and a painting
/// style (`sketch`, an image only).
pub fn style_folder(dir: &Path) -> PathBuf {
    let styles = dir.join("styles");
    let tiny = styles.join("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    fixtures::random_model(&tiny.join("model.safetensors"), 7);
    fixtures::gradient_image(32, 32)
        .save(tiny.join("thumb.png"))
        .unwrap();
    std::fs::write(
        tiny.join("style.toml"),
        "name = \"Tiny\"\nmodel = \"model.safetensors\"\nthumbnail = \"thumb.png\"\n",
    )
    .unwrap();
    let sketch = styles.join("sketch");
    std::fs::create_dir_all(&sketch).unwrap();
    fixtures::stripes(64, 64)
        .save(sketch.join("painting.png"))
        .unwrap();
    std::fs::write(
        sketch.join("style.toml"),
        "name = \"Sketch\"\nimage = \"painting.png\"\n",
    )
    .unwrap();
    styles
}

pub fn png_bytes(image: &RgbImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// One part of a multipart form.
pub enum Part<'a> {
    Text(&'a str, &'a str),
    File(&'a str, &'a str, &'a [u8]),
}

pub const BOUNDARY: &str = "atelier-test-boundary-7b3f";

pub fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
            Part::File(name, file_name, bytes) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(bytes);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A response's status, headers we look at, and body.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error.code` of a JSON error.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn reply_of(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = response.status();
    let retry_after = response.header("retry-after").map(str::to_string);
    let content_type = response.content_type().to_string();
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body).unwrap();
    Reply {
        status,
        retry_after,
        content_type,
        body,
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        // A fresh connection per request: a pooled one that the server's header timeout closed
        // while idle is reset under the next request (seen under parallel tests).
        .max_idle_connections(0)
        .build()
}

pub fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> Reply {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    reply_of(request.call())
}

pub fn delete(agent: &ureq::Agent, url: &str) -> Reply {
    reply_of(agent.delete(url).call())
}

pub fn post_form(agent: &ureq::Agent, url: &str, parts: &[Part<'_>], token: Option<&str>) -> Reply {
    let mut request = agent.post(url).set(
        "Content-Type",
        &format!("multipart/form-data; boundary={BOUNDARY}"),
    );
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    reply_of(request.send_bytes(&multipart(parts)))
}

/// Polls a job until it ends (or `limit` passes); returns its last view.
pub fn wait_for_job(agent: &ureq::Agent, server: &TestServer, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let view = get(agent, &server.url(&format!("/api/jobs/{id}")), None).json();
        let state = view["state"].as_str().unwrap_or_default().to_string();
        if ["finished", "failed", "cancelled"].contains(&state.as_str()) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {state} after {limit:?}: {view}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
