//! The VGG lookup and the hub download, against a tiny HTTP/1.1 server on 127.0.0.1 that answers
//! the requests hf-hub's sync API makes (a `Range: bytes=0-0` GET for metadata, then a ranged GET
//! for the body), optionally behind an absolute redirect like the real hub's CDN.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atelier::nn::hub::{self, VggSearch, VGG19_FILE, VGG19_REPO};
use atelier::nn::weights::WeightFile;
use atelier::Error;
use candle_core::Device;

/// The server stops after this long or this many connections, whichever comes first, so a
/// misbehaving client can never keep a test (or the process) alive.
const SERVER_LIFETIME: Duration = Duration::from_secs(30);
const SERVER_MAX_CONNECTIONS: usize = 32;

/// Tests that read or write process environment variables take this lock.
static ENV_LOCK: Mutex<()> = Mutex::new(());

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const ETAG: &str = "5e1f0c0ffee0000000000000000000000000000000000000000000000000beef";

/// ureq (under hf-hub) reads proxy variables but not NO_PROXY, so a CI proxy would swallow the
/// loopback requests; these tests talk only to 127.0.0.1.
fn without_proxies() {
    static CLEAR: std::sync::Once = std::sync::Once::new();
    CLEAR.call_once(|| {
        let _env = ENV_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for name in [
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
        ] {
            std::env::remove_var(name);
        }
    });
}

fn resolve_path() -> String {
    format!("/{VGG19_REPO}/resolve/main/{VGG19_FILE}")
}

/// A 2-output 3x3 conv as `features.0` plus its bias, in safetensors format.
fn tiny_vgg_safetensors() -> Vec<u8> {
    let weight: Vec<u8> = (0..2 * 3 * 3 * 3)
        .flat_map(|i| (i as f32 * 0.01 - 0.2).to_le_bytes())
        .collect();
    let bias: Vec<u8> = [0.5f32, -0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let header = serde_json::json!({
        "__metadata__": {"source": "atelier test"},
        "features.0.weight": {"dtype": "F32", "shape": [2, 3, 3, 3], "data_offsets": [0, weight.len()]},
        "features.0.bias": {"dtype": "F32", "shape": [2], "data_offsets": [weight.len(), weight.len() + bias.len()]},
    })
    .to_string();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&weight);
    file.extend_from_slice(&bias);
    file
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

struct Response {
    status: u16,
    reason: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Serves `bytes` honouring a `Range: bytes=START-[END]` header, as the hub and its CDN do.
fn serve_bytes(request: &Request, bytes: &[u8]) -> Response {
    let Some(range) = request.headers.get("range") else {
        let mut response = Response::new(200, "OK");
        response.body = bytes.to_vec();
        return response;
    };
    let (start, end) = range
        .trim_start_matches("bytes=")
        .split_once('-')
        .expect("range START-END");
    let start: usize = start.parse().expect("range start");
    let end: usize = if end.is_empty() {
        bytes.len() - 1
    } else {
        end.parse::<usize>()
            .expect("range end")
            .min(bytes.len() - 1)
    };
    if start >= bytes.len() {
        return Response::new(416, "Range Not Satisfiable")
            .header("Content-Range", &format!("bytes */{}", bytes.len()));
    }
    let mut response = Response::new(206, "Partial Content").header(
        "Content-Range",
        &format!("bytes {start}-{end}/{}", bytes.len()),
    );
    response.body = bytes[start..=end].to_vec();
    response
}

type Handler = dyn Fn(&Request, &str) -> Response + Send + Sync;

/// A loopback HTTP/1.1 server answering one request per connection (`Connection: close`).
struct TestHub {
    endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestHub {
    /// `handler` gets the request and the server's base URL (for absolute redirects).
    fn start(handler: impl Fn(&Request, &str) -> Response + Send + Sync + 'static) -> Self {
        without_proxies();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let (endpoint, requests, stop) = (endpoint.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + SERVER_LIFETIME;
                let mut connections = 0;
                while connections < SERVER_MAX_CONNECTIONS
                    && Instant::now() < deadline
                    && !stop.load(Ordering::SeqCst)
                {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections += 1;
                            // Errors on one connection (client gave up) must not stop the server.
                            let _ = serve_one(stream, &*handler, &endpoint, &requests);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Self {
            endpoint,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(
    stream: TcpStream,
    handler: &Handler,
    endpoint: &str,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    // Accepted sockets may inherit the listener's non-blocking mode on some platforms.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let range = headers.get("range").cloned().unwrap_or_default();
    requests
        .lock()
        .unwrap()
        .push(format!("{method} {path} {range}").trim_end().to_string());

    let request = Request {
        method,
        path,
        headers,
    };
    let response = handler(&request, endpoint);
    let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, response.reason);
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    let mut stream = stream;
    stream.write_all(head.as_bytes())?;
    if request.method != "HEAD" {
        stream.write_all(&response.body)?;
    }
    stream.flush()
}

/// The hub answering the resolve URL directly with the file (how it serves small, non-LFS files).
fn direct_hub(file: Vec<u8>) -> TestHub {
    TestHub::start(move |request, _| {
        if request.path == resolve_path() {
            serve_bytes(request, &file)
                .header("x-repo-commit", COMMIT)
                .header("ETag", &format!("\"{ETAG}\""))
        } else {
            Response::new(404, "Not Found")
        }
    })
}

fn assert_no_temp_files(cache: &Path) {
    let leftovers: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name != "hub" && name != hub::VGG19_CACHE_NAME
        })
        .collect();
    assert!(leftovers.is_empty(), "unexpected files: {leftovers:?}");
}

#[test]
fn download_lands_at_cache_path_with_identical_bytes() {
    let file = tiny_vgg_safetensors();
    let server = direct_hub(file.clone());
    let cache = tempfile::tempdir().unwrap();

    // A trailing slash on the endpoint must not produce `//timm/...`.
    let endpoint = format!("{}/", server.endpoint);
    let path = hub::download_vgg19_into(cache.path(), Some(&endpoint), false).unwrap();

    assert_eq!(path, cache.path().join("vgg19.safetensors"));
    assert_eq!(std::fs::read(&path).unwrap(), file);
    let weights = WeightFile::load(&path, &Device::Cpu).unwrap();
    assert!(weights.get("features.0.weight", &[2, 3, 3, 3]).is_ok());
    assert_no_temp_files(cache.path());
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.starts_with(&format!("GET {}", resolve_path()))),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.ends_with("bytes=0-0")),
        "{requests:?}"
    );

    // Once present and valid, the file is returned without any network access.
    drop(server);
    let again = hub::download_vgg19_into(cache.path(), Some("http://127.0.0.1:9"), false).unwrap();
    assert_eq!(again, path);
}

#[test]
fn download_follows_absolute_redirect_to_cdn() {
    let file = tiny_vgg_safetensors();
    let server = TestHub::start(move |request, endpoint| {
        if request.path == resolve_path() {
            // The real hub answers LFS files with a redirect carrying the commit and the
            // content hash; the CDN then serves the bytes.
            Response::new(302, "Found")
                .header("Location", &format!("{endpoint}/cdn/blob/{ETAG}"))
                .header("x-repo-commit", COMMIT)
                .header("x-linked-etag", &format!("\"{ETAG}\""))
                .header("ETag", "\"pointer-file-etag\"")
        } else if request.path == format!("/cdn/blob/{ETAG}") {
            serve_bytes(request, &file)
        } else {
            Response::new(404, "Not Found")
        }
    });
    let cache = tempfile::tempdir().unwrap();

    let path = hub::download_vgg19_into(cache.path(), Some(&server.endpoint), false).unwrap();

    assert_eq!(std::fs::read(&path).unwrap(), tiny_vgg_safetensors());
    let requests = server.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /cdn/blob/")),
        "{requests:?}"
    );
    // hf-hub names the blob after x-linked-etag (the content hash), not the pointer's etag.
    let blob = cache
        .path()
        .join("hub/models--timm--vgg19.tv_in1k/blobs")
        .join(ETAG);
    assert!(blob.is_file());
    assert_no_temp_files(cache.path());
}

#[test]
fn missing_file_gives_clear_error_and_no_file() {
    let server = TestHub::start(|_, _| {
        Response::new(404, "Not Found")
            .header("x-error-code", "EntryNotFound")
            .header("x-error-message", "Entry not found")
    });
    let cache = tempfile::tempdir().unwrap();

    let err = hub::download_vgg19_into(cache.path(), Some(&server.endpoint), false).unwrap_err();

    assert!(matches!(err, Error::Weights { .. }), "{err:?}");
    let message = err.to_string();
    for expected in ["404", "Entry not found", VGG19_REPO, VGG19_FILE, "--vgg"] {
        assert!(
            message.contains(expected),
            "{expected:?} missing in: {message}"
        );
    }
    assert!(!cache.path().join("vgg19.safetensors").exists());
}

#[test]
fn non_safetensors_body_is_rejected_and_forgotten() {
    let page = b"<!doctype html><title>Sign in</title>".to_vec();
    let server = direct_hub(page);
    let cache = tempfile::tempdir().unwrap();

    let err = hub::download_vgg19_into(cache.path(), Some(&server.endpoint), false).unwrap_err();

    let message = err.to_string();
    assert!(message.contains("unusable"), "{message}");
    assert!(!cache.path().join("vgg19.safetensors").exists());
    // The bad blob is gone, so a later attempt downloads again rather than reusing it.
    let blob = cache
        .path()
        .join("hub/models--timm--vgg19.tv_in1k/blobs")
        .join(ETAG);
    assert!(!blob.exists());
    assert_no_temp_files(cache.path());
}

#[test]
fn unreachable_endpoint_gives_clear_error() {
    without_proxies();
    // A server that hangs up without answering: deterministic, unlike a freed port that a
    // parallel test may bind again.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let hang_up = std::thread::spawn(move || {
        let deadline = Instant::now() + SERVER_LIFETIME;
        let mut connections = 0;
        while connections < SERVER_MAX_CONNECTIONS && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    connections += 1;
                    drop(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let cache = tempfile::tempdir().unwrap();

    let err = hub::download_vgg19_into(cache.path(), Some(&endpoint), false).unwrap_err();

    let message = err.to_string();
    assert!(message.contains("cannot reach"), "{message}");
    assert!(message.contains(&endpoint), "{message}");
    assert!(!cache.path().join("vgg19.safetensors").exists());
    drop(hang_up); // detached; it stops by itself within SERVER_LIFETIME
}

#[test]
fn bad_endpoint_scheme_is_invalid_argument() {
    let cache = tempfile::tempdir().unwrap();
    let err = hub::download_vgg19_into(cache.path(), Some("ftp://example.org"), false).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[test]
fn check_rejects_truncated_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = tiny_vgg_safetensors();

    let complete = dir.path().join("complete.safetensors");
    std::fs::write(&complete, &file).unwrap();
    assert_eq!(hub::check_vgg_safetensors(&complete), Ok(()));

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &file[..file.len() - 3]).unwrap();
    let reason = hub::check_vgg_safetensors(&truncated).unwrap_err();
    assert!(reason.contains("incomplete"), "{reason}");

    let header = r#"{"layer.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut foreign = (header.len() as u64).to_le_bytes().to_vec();
    foreign.extend_from_slice(header.as_bytes());
    foreign.extend_from_slice(&1f32.to_le_bytes());
    let foreign_path = dir.path().join("foreign.safetensors");
    std::fs::write(&foreign_path, foreign).unwrap();
    let reason = hub::check_vgg_safetensors(&foreign_path).unwrap_err();
    assert!(reason.contains("features.0.weight"), "{reason}");
}

#[test]
fn search_order_explicit_env_cache_and_no_working_directory_paths() {
    let dir = tempfile::tempdir().unwrap();
    let touch = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"x").unwrap();
        path
    };
    let explicit = touch("explicit.pth");
    let from_env = touch("env.safetensors");
    let cache = dir.path().join("cache");
    let mut search = VggSearch {
        env_path: Some(from_env.clone()),
        cache_dir: Some(cache.clone()),
    };

    assert_eq!(search.resolve(Some(&explicit)).unwrap(), explicit);
    assert_eq!(search.resolve(None).unwrap(), from_env);

    // A path given explicitly or by the environment must exist: no silent fallback.
    let err = search
        .resolve(Some(&dir.path().join("typo.pth")))
        .unwrap_err();
    assert!(matches!(err, Error::Weights { .. }), "{err:?}");
    assert!(err.to_string().contains("--vgg"), "{err}");
    search.env_path = Some(dir.path().join("typo.safetensors"));
    let err = search.resolve(None).unwrap_err();
    assert!(err.to_string().contains("ATELIER_VGG"), "{err}");

    search.env_path = None;
    // A development copy beside the working directory is not a product path.
    assert!(matches!(
        search.resolve(None).unwrap_err(),
        Error::MissingVgg { .. }
    ));
    assert!(!search
        .candidates()
        .iter()
        .any(|p| p.to_string_lossy().contains("shared")));
    let cached16 = touch("cache/vgg16-features.safetensors");
    assert_eq!(search.resolve(None).unwrap(), cached16);
    let cached19 = touch("cache/vgg19.safetensors");
    assert_eq!(search.resolve(None).unwrap(), cached19);

    let empty = VggSearch {
        env_path: None,
        cache_dir: Some(dir.path().join("nothing")),
    };
    let err = empty.resolve(None).unwrap_err();
    match &err {
        Error::MissingVgg { searched, .. } => assert_eq!(
            searched,
            &vec![
                dir.path().join("nothing/vgg19.safetensors"),
                dir.path().join("nothing/vgg16-features.safetensors")
            ]
        ),
        other => panic!("expected MissingVgg, got {other:?}"),
    }
    let message = err.to_string();
    for expected in [
        "atelier fetch-vgg",
        "575 MB",
        "Hugging Face",
        "ATELIER_VGG",
        "--vgg PATH",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} missing in: {message}"
        );
    }
}

/// Everything that reads the process environment, in one test so nothing races on it.
#[test]
fn environment_configures_cache_vgg_and_endpoint() {
    // Before taking ENV_LOCK: it takes the lock itself the first time.
    without_proxies();
    let _env = ENV_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let saved: Vec<(&str, Option<std::ffi::OsString>)> = [
        "ATELIER_CACHE",
        "ATELIER_VGG",
        "HF_ENDPOINT",
        "XDG_CACHE_HOME",
    ]
    .into_iter()
    .map(|name| (name, std::env::var_os(name)))
    .collect();
    let dir = tempfile::tempdir().unwrap();

    // Cache directory: ATELIER_CACHE wins; else the platform cache root plus "atelier".
    std::env::remove_var("ATELIER_CACHE");
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        std::env::set_var("XDG_CACHE_HOME", dir.path().join("xdg"));
        assert_eq!(hub::cache_dir(), Some(dir.path().join("xdg/atelier")));
        // A relative XDG_CACHE_HOME is invalid per the spec and ignored.
        std::env::set_var("XDG_CACHE_HOME", "relative/cache");
        assert_ne!(
            hub::cache_dir(),
            Some(PathBuf::from("relative/cache/atelier"))
        );
    }
    let cache = dir.path().join("atelier-cache");
    std::env::set_var("ATELIER_CACHE", &cache);
    assert_eq!(hub::cache_dir(), Some(cache.clone()));

    // resolve_vgg: ATELIER_VGG, then the cache.
    let from_env = dir.path().join("mine.safetensors");
    std::fs::write(&from_env, b"x").unwrap();
    std::env::set_var("ATELIER_VGG", &from_env);
    assert_eq!(hub::resolve_vgg(None).unwrap(), from_env);
    let search = VggSearch::from_env();
    assert_eq!(search.env_path, Some(from_env.clone()));
    assert_eq!(search.cache_dir, Some(cache.clone()));
    std::env::remove_var("ATELIER_VGG");

    // download_vgg19 with no endpoint: HF_ENDPOINT picks the server, ATELIER_CACHE the place.
    let server = direct_hub(tiny_vgg_safetensors());
    std::env::set_var("HF_ENDPOINT", &server.endpoint);
    let downloaded = hub::download_vgg19(None, false).unwrap();
    assert_eq!(downloaded, cache.join("vgg19.safetensors"));
    assert!(!server.requests().is_empty());
    assert_eq!(hub::resolve_vgg(None).unwrap(), downloaded);
    // An explicit path still wins over the download.
    assert_eq!(hub::resolve_vgg(Some(&from_env)).unwrap(), from_env);

    for (name, value) in saved {
        match value {
            Some(value) => std::env::set_var(name, value),
            None => std::env::remove_var(name),
        }
    }
}
