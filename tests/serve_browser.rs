//! The page of `atelier serve` in headless Chromium, driven over WebDriver (chromedriver,
//! fantoccini): upload a photo, pick a style, watch the progress, download the result. Writes a
//! screenshot to `target/screenshots/serve-page.png`. Skips itself, saying so, when Chromium or
//! chromedriver is missing (`.ci/run` installs both).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures;
use common::server::{style_folder, TestServer};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_uploads_a_photo_picks_a_style_and_downloads_the_result() {
    let (Some(chromedriver), Some(chromium)) = (
        find_program(&["chromedriver"]),
        find_program(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        eprintln!(
            "skipping: chromium and chromedriver are not installed \
             (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let styles = style_folder(dir.path());
    let server = TestServer::start(&["--styles", &styles.display().to_string()]);
    let photo = dir.path().join("harbour.png");
    fixtures::gradient_image(120, 80).save(&photo).unwrap();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();

    let port = free_port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900"],
            "prefs": {
                "download.default_directory": downloads,
                "download.prompt_for_download": false
            }
        }
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    let webdriver = format!("http://127.0.0.1:{port}");
    // chromedriver takes a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&webdriver)
            .await
        {
            Ok(client) => break client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("cannot start a browser session: {e}"),
        }
    };

    client.goto(&server.url("/")).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "Atelier");
    // The gallery loads from /api/styles.
    let tile = client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(".tile[data-id=tiny]"))
        .await
        .unwrap();
    client
        .find(Locator::Id("photo"))
        .await
        .unwrap()
        .send_keys(&photo.display().to_string())
        .await
        .unwrap();
    tile.click().await.unwrap();
    let go = client.find(Locator::Id("go")).await.unwrap();
    assert!(go.is_enabled().await.unwrap(), "Stylize stays disabled");
    go.click().await.unwrap();

    let download = client.find(Locator::Id("download")).await.unwrap();
    wait_until("the result", Duration::from_secs(60), || async {
        download.is_displayed().await.unwrap_or(false)
    })
    .await;
    let status = client
        .find(Locator::Id("status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.starts_with("Done: 120×80"), "{status}");
    let recipe = client
        .find(Locator::Id("recipe"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(recipe.contains("\"method\": \"network\""), "{recipe}");
    let progress = client
        .execute("return document.getElementById('progress').value;", vec![])
        .await
        .unwrap();
    assert_eq!(progress.as_f64(), Some(1.0));

    let shot = client.screenshot().await.unwrap();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("serve-page.png"), &shot).unwrap();

    download.click().await.unwrap();
    let mut saved = None;
    wait_until("the download", Duration::from_secs(30), || {
        let found = std::fs::read_dir(&downloads)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "png"));
        saved = found.clone();
        async move { found.is_some() }
    })
    .await;
    let saved = saved.unwrap();
    assert!(saved
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("atelier-"));
    let image = image::open(&saved).unwrap();
    assert_eq!((image.width(), image.height()), (120, 80));
    client.close().await.unwrap();
}
