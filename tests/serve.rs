//! `atelier serve`: the HTTP API against the real binary on an ephemeral loopback port, with
//! small random networks (and the built-in VGG16 for the painting methods).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::fixtures;
use common::png::png_header_only;
use common::server::{
    agent, delete, get, png_bytes, post_form, style_folder, wait_for_job, Part, TestServer,
    BOUNDARY,
};

fn styles_arg(dir: &Path) -> String {
    style_folder(dir).display().to_string()
}

#[test]
fn a_photo_and_a_style_make_a_result_with_its_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&["--styles", &styles_arg(dir.path())]);
    let agent = agent();

    let page = get(&agent, &server.url("/"), None);
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<title>Atelier</title>"));

    let listing = get(&agent, &server.url("/api/styles"), None).json();
    let styles = listing["styles"].as_array().unwrap();
    let ids: Vec<&str> = styles.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sketch", "tiny"], "{listing}");
    let tiny = &styles[1];
    assert_eq!(tiny["methods"][0], "network");
    assert_eq!(styles[0]["methods"][0], "arbitrary");
    let thumbnail = get(
        &agent,
        &server.url(tiny["thumbnail"].as_str().unwrap()),
        None,
    );
    assert_eq!(thumbnail.status, 200);
    assert_eq!(thumbnail.content_type, "image/png");
    image::load_from_memory(&thumbnail.body).unwrap();

    let photo = png_bytes(&fixtures::gradient_image(40, 24));
    let submitted = post_form(
        &agent,
        &server.url("/api/jobs"),
        &[
            Part::File("photo", "street.png", &photo),
            Part::Text("style", "tiny"),
            Part::Text("strength", "0.8"),
        ],
        None,
    );
    assert_eq!(submitted.status, 202, "{}", submitted.json());
    let id = submitted.json()["id"].as_str().unwrap().to_string();
    let view = wait_for_job(&agent, &server, &id, Duration::from_secs(60));
    assert_eq!(view["state"], "finished", "{view}");
    assert_eq!(
        (view["width"].as_u64(), view["height"].as_u64()),
        (Some(40), Some(24))
    );
    assert_eq!(view["progress"], 1.0);
    assert_eq!(view["recipe"]["method"], "network");
    assert_eq!(view["recipe"]["model"], "tiny");
    assert_eq!(view["recipe"]["photo"], "street.png");
    assert!(view["expires_in"].as_u64().unwrap() > 60, "{view}");

    let result = get(&agent, &server.url(view["result"].as_str().unwrap()), None);
    assert_eq!(result.status, 200);
    assert_eq!(result.content_type, "image/png");
    let image = image::load_from_memory(&result.body).unwrap();
    assert_eq!((image.width(), image.height()), (40, 24));
    let recipe = atelier::recipe::recipe_from_png(result.body.clone(), Path::new("r.png")).unwrap();
    assert_eq!(recipe.strength, 0.8);
    assert_eq!(recipe.method, "network");

    // The event stream of an ended job gives its last state and ends.
    let events = agent
        .get(&server.url(&format!("/api/jobs/{id}/events")))
        .call()
        .unwrap();
    assert_eq!(events.content_type(), "text/event-stream");
    let mut text = String::new();
    events.into_reader().read_to_string(&mut text).unwrap();
    assert!(text.contains("event: job"), "{text}");
    assert!(text.contains("\"state\":\"finished\""), "{text}");

    // DELETE of an ended job deletes it with its result.
    assert_eq!(
        delete(&agent, &server.url(&format!("/api/jobs/{id}"))).status,
        200
    );
    let gone = get(&agent, &server.url(&format!("/api/jobs/{id}/result")), None);
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error_code(), "not_found");
}

#[test]
fn paintings_run_with_the_arbitrary_and_optimize_methods_and_stream_progress() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&["--styles", &styles_arg(dir.path())]);
    let agent = agent();
    let photo = png_bytes(&fixtures::gradient_image(48, 32));
    let painting = png_bytes(&fixtures::stripes(64, 64));

    let arbitrary = post_form(
        &agent,
        &server.url("/api/jobs"),
        &[
            Part::File("photo", "p.png", &photo),
            Part::File("painting", "my painting.png", &painting),
        ],
        None,
    );
    assert_eq!(arbitrary.status, 202, "{}", arbitrary.json());
    assert_eq!(arbitrary.json()["method"], "arbitrary");
    let id = arbitrary.json()["id"].as_str().unwrap().to_string();
    let view = wait_for_job(&agent, &server, &id, Duration::from_secs(120));
    assert_eq!(view["state"], "finished", "{view}");
    assert_eq!(view["recipe"]["styles"][0]["path"], "my painting.png");

    // Optimisation of the gallery's painting style: its progress and intermediate pictures
    // stream as server-sent events.
    let optimize = post_form(
        &agent,
        &server.url("/api/jobs"),
        &[
            Part::File("photo", "p.png", &photo),
            Part::Text("style", "sketch"),
            Part::Text("method", "optimize"),
            Part::Text("steps", "12"),
            Part::Text("size", "48"),
        ],
        None,
    );
    assert_eq!(optimize.status, 202, "{}", optimize.json());
    let id = optimize.json()["id"].as_str().unwrap().to_string();
    let events = agent
        .get(&server.url(&format!("/api/jobs/{id}/events")))
        .call()
        .unwrap();
    let mut steps = Vec::new();
    let mut preview = None;
    let mut last = serde_json::Value::Null;
    for line in BufReader::new(events.into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let view: serde_json::Value = serde_json::from_str(data).unwrap();
        steps.push(view["step"].as_u64().unwrap());
        if let Some(url) = view["preview"].as_str() {
            preview = Some(url.to_string());
        }
        last = view;
    }
    assert_eq!(last["state"], "finished", "{last}");
    assert!(steps.len() >= 3, "progress events: {steps:?}");
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    let preview = preview.expect("an intermediate picture");
    let picture = get(&agent, &server.url(&preview), None);
    assert_eq!(picture.status, 200);
    assert_eq!(picture.content_type, "image/jpeg");
    assert_eq!(last["recipe"]["steps"], 12);
}

#[test]
fn bad_requests_get_json_errors_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(&[
        "--styles",
        &styles_arg(dir.path()),
        "--max-upload-mb",
        "1",
        "--upload-timeout",
        "2",
    ]);
    let agent = agent();
    let jobs = server.url("/api/jobs");
    let photo = png_bytes(&fixtures::gradient_image(16, 16));
    let check = |reply: common::server::Reply, status: u16, code: &str| {
        assert_eq!(
            reply.status,
            status,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.content_type, "application/json");
        assert_eq!(reply.error_code(), code, "{}", reply.json());
        assert!(!reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .is_empty());
    };

    let text = b"just some words, no pixels";
    check(
        post_form(
            &agent,
            &jobs,
            &[
                Part::File("photo", "a.png", text),
                Part::Text("style", "tiny"),
            ],
            None,
        ),
        415,
        "not_an_image",
    );
    // A few hundred bytes whose header claims 30000×30000: refused before decoding.
    let bomb = png_header_only(30000, 30000);
    let reply = post_form(
        &agent,
        &jobs,
        &[
            Part::File("photo", "bomb.png", &bomb),
            Part::Text("style", "tiny"),
        ],
        None,
    );
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("30000×30000"));
    check(reply, 413, "too_large");
    let oversize = vec![7u8; 6 << 20];
    check(
        post_form(
            &agent,
            &jobs,
            &[Part::File("photo", "big.png", &oversize)],
            None,
        ),
        413,
        "too_large",
    );
    check(
        post_form(
            &agent,
            &jobs,
            &[
                Part::File("photo", "a.png", &photo),
                Part::Text("style", "nope"),
            ],
            None,
        ),
        404,
        "unknown_style",
    );
    check(
        post_form(
            &agent,
            &jobs,
            &[
                Part::File("photo", "a.png", &photo),
                Part::Text("style", "tiny"),
                Part::Text("strength", "3"),
            ],
            None,
        ),
        400,
        "bad_setting",
    );
    check(
        post_form(
            &agent,
            &jobs,
            &[
                Part::File("photo", "a.png", &photo),
                Part::Text("colour", "red"),
            ],
            None,
        ),
        400,
        "unknown_field",
    );
    check(
        post_form(&agent, &jobs, &[Part::Text("style", "tiny")], None),
        400,
        "bad_setting",
    );
    check(
        post_form(
            &agent,
            &jobs,
            &[
                Part::File("photo", "a.png", &photo),
                Part::Text("style", "sketch"),
                Part::Text("method", "network"),
            ],
            None,
        ),
        400,
        "bad_setting",
    );
    // Malformed multipart: a body that never opens with its boundary, and one cut short.
    let malformed = agent
        .post(&jobs)
        .set(
            "Content-Type",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .send_bytes(b"this is not multipart at all");
    check(common::server::reply_of(malformed), 400, "bad_multipart");
    let mut cut = common::server::multipart(&[Part::File("photo", "a.png", &photo)]);
    cut.truncate(cut.len() / 2);
    let cut = agent
        .post(&jobs)
        .set(
            "Content-Type",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .send_bytes(&cut);
    check(common::server::reply_of(cut), 400, "bad_multipart");
    let no_form = agent
        .post(&jobs)
        .set("Content-Type", "application/json")
        .send_string("{}");
    let no_form = common::server::reply_of(no_form);
    assert!(
        no_form.status == 400 || no_form.status == 415,
        "{}",
        no_form.status
    );
    assert_eq!(no_form.error_code(), "bad_multipart");
    check(
        get(&agent, &server.url("/api/jobs/0123456789abcdef"), None),
        404,
        "not_found",
    );
    check(
        get(&agent, &server.url("/api/nothing-here"), None),
        404,
        "not_found",
    );

    // A client that sends its body a byte a second is cut off after --upload-timeout.
    let started = Instant::now();
    let address = server.base.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = common::server::multipart(&[Part::File("photo", "a.png", &photo)]);
    write!(
        slow,
        "POST /api/jobs HTTP/1.1\r\nHost: {address}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    for byte in body.iter().take(10) {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        let mut buf = [0u8; 4096];
        slow.set_nonblocking(true).unwrap();
        if let Ok(n) = slow.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        slow.set_nonblocking(false).unwrap();
        if !answer.is_empty() {
            break;
        }
    }
    if answer.is_empty() {
        let mut buf = [0u8; 4096];
        let n = slow.read(&mut buf).unwrap_or(0);
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("upload_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );

    // Still up, and still working.
    assert!(server.alive(), "{}", server.stderr());
    assert_eq!(get(&agent, &server.url("/api/styles"), None).status, 200);
    let ok = post_form(
        &agent,
        &jobs,
        &[
            Part::File("photo", "a.png", &photo),
            Part::Text("style", "tiny"),
        ],
        None,
    );
    assert_eq!(ok.status, 202);
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_cancelling_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&["--styles", &styles_arg(dir.path()), "--queue", "1"]);
    let agent = agent();
    let jobs = server.url("/api/jobs");
    let photo = png_bytes(&fixtures::gradient_image(96, 96));
    // A long optimisation holds the only place.
    let long = post_form(
        &agent,
        &jobs,
        &[
            Part::File("photo", "a.png", &photo),
            Part::Text("style", "sketch"),
            Part::Text("method", "optimize"),
            Part::Text("steps", "500"),
        ],
        None,
    );
    assert_eq!(long.status, 202, "{}", long.json());
    let long_id = long.json()["id"].as_str().unwrap().to_string();
    let full = post_form(
        &agent,
        &jobs,
        &[
            Part::File("photo", "a.png", &photo),
            Part::Text("style", "tiny"),
        ],
        None,
    );
    assert_eq!(full.status, 503);
    assert_eq!(full.error_code(), "queue_full");
    let retry: u64 = full.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(retry >= 1);

    let cancelled = delete(&agent, &server.url(&format!("/api/jobs/{long_id}")));
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.json()["state"], "cancelled");
    let result = get(
        &agent,
        &server.url(&format!("/api/jobs/{long_id}/result")),
        None,
    );
    assert_eq!(result.status, 409);
    assert_eq!(result.error_code(), "not_finished");

    let next = post_form(
        &agent,
        &jobs,
        &[
            Part::File("photo", "a.png", &photo),
            Part::Text("style", "tiny"),
        ],
        None,
    );
    assert_eq!(next.status, 202, "{}", next.json());
    let id = next.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_for_job(&agent, &server, &id, Duration::from_secs(60))["state"],
        "finished"
    );
    // The cancelled job stays cancelled whatever the engine was doing.
    let view = get(&agent, &server.url(&format!("/api/jobs/{long_id}")), None).json();
    assert_eq!(view["state"], "cancelled");
}

#[test]
fn results_are_deleted_when_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    // 0.02 minutes: 1.2 s.
    let server = TestServer::start(&[
        "--styles",
        &styles_arg(dir.path()),
        "--keep-minutes",
        "0.02",
    ]);
    let agent = agent();
    let photo = png_bytes(&fixtures::gradient_image(16, 16));
    let job = post_form(
        &agent,
        &server.url("/api/jobs"),
        &[
            Part::File("photo", "a.png", &photo),
            Part::Text("style", "tiny"),
        ],
        None,
    );
    let id = job.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_for_job(&agent, &server, &id, Duration::from_secs(60))["state"],
        "finished"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(&agent, &server.url(&format!("/api/jobs/{id}/result")), None);
        if reply.status == 404 {
            assert!(reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expired"));
            break;
        }
        assert!(Instant::now() < deadline, "the result never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_token_guards_the_api_and_public_addresses_need_one() {
    let dir = tempfile::tempdir().unwrap();
    let styles = styles_arg(dir.path());
    let server = TestServer::start(&["--styles", &styles, "--token", "s3cret"]);
    let agent = agent();
    let styles_url = server.url("/api/styles");
    let missing = get(&agent, &styles_url, None);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.error_code(), "token_required");
    assert_eq!(
        get(&agent, &styles_url, Some("wrong")).error_code(),
        "bad_token"
    );
    assert_eq!(get(&agent, &styles_url, Some("s3cret")).status, 200);
    assert_eq!(
        get(&agent, &format!("{styles_url}?token=s3cret"), None).status,
        200
    );
    let photo = png_bytes(&fixtures::gradient_image(16, 16));
    let parts = [
        Part::File("photo", "a.png", &photo),
        Part::Text("style", "tiny"),
    ];
    assert_eq!(
        post_form(&agent, &server.url("/api/jobs"), &parts, None).status,
        401
    );
    assert_eq!(
        post_form(&agent, &server.url("/api/jobs"), &parts, Some("s3cret")).status,
        202
    );
    // The page and the API's description are public: they say how to authenticate.
    assert_eq!(get(&agent, &server.url("/"), None).status, 200);
    assert_eq!(
        get(&agent, &server.url("/api/openapi.json"), None).status,
        200
    );

    for (args, expected) in [
        (vec!["--addr", "0.0.0.0:0"], "needs --public and a --token"),
        (
            vec!["--addr", "0.0.0.0:0", "--public"],
            "--public needs a --token",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_atelier"))
            .arg("serve")
            .args(&args)
            .args(["--styles", &styles])
            .env_remove("ATELIER_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn the_openapi_document_describes_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&["--styles", &styles_arg(dir.path())]);
    let document = get(&agent(), &server.url("/api/openapi.json"), None).json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/jobs", "post"),
        ("/api/jobs/{id}", "get"),
        ("/api/jobs/{id}", "delete"),
        ("/api/jobs/{id}/result", "get"),
        ("/api/jobs/{id}/preview", "get"),
        ("/api/jobs/{id}/events", "get"),
        ("/api/styles", "get"),
        ("/api/styles/{id}/thumbnail", "get"),
        ("/api/health", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not described"
        );
    }
}

/// The load test: 50 clients on loopback, each submitting 4 jobs with a bundled network style
/// one after another and downloading every result. Bounded in count (200 jobs) and time.
#[test]
fn fifty_clients_with_four_jobs_each_all_finish() {
    const CLIENTS: usize = 50;
    const JOBS_EACH: usize = 4;
    let styles = Path::new(env!("CARGO_MANIFEST_DIR")).join("styles");
    let server = TestServer::start(&["--styles", &styles.display().to_string(), "--queue", "64"]);
    let photo = png_bytes(&fixtures::gradient_image(96, 64));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let base = server.base.clone();
    let latencies: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let photo = &photo;
                let base = &base;
                scope.spawn(move || {
                    let agent = agent();
                    let mut times = Vec::new();
                    for _ in 0..JOBS_EACH {
                        let submitted = Instant::now();
                        let id = loop {
                            let reply = post_form(
                                &agent,
                                &format!("{base}/api/jobs"),
                                &[
                                    Part::File("photo", "a.png", photo),
                                    Part::Text("style", "great-wave"),
                                ],
                                None,
                            );
                            if reply.status == 503 {
                                let wait: u64 = reply.retry_after.unwrap().parse().unwrap();
                                std::thread::sleep(Duration::from_secs(wait));
                                continue;
                            }
                            assert_eq!(reply.status, 202, "{}", reply.json());
                            break reply.json()["id"].as_str().unwrap().to_string();
                        };
                        loop {
                            let view = get(&agent, &format!("{base}/api/jobs/{id}"), None).json();
                            match view["state"].as_str().unwrap() {
                                "finished" => break,
                                "queued" | "running" => {}
                                other => panic!("job {id} {other}: {view}"),
                            }
                            assert!(Instant::now() < deadline, "the load test ran out of time");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        let result = get(&agent, &format!("{base}/api/jobs/{id}/result"), None);
                        assert_eq!(result.status, 200);
                        assert_eq!(image::load_from_memory(&result.body).unwrap().width(), 96);
                        times.push(submitted.elapsed().as_secs_f64());
                    }
                    times
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
    assert_eq!(all.len(), CLIENTS * JOBS_EACH, "jobs lost");
    all.sort_by(f64::total_cmp);
    let quantile = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "load test: {} jobs from {CLIENTS} clients in {:.1} s; latency p50 {:.2} s, p95 {:.2} s, \
         max {:.2} s; server peak RSS {:.0} MiB",
        all.len(),
        started.elapsed().as_secs_f64(),
        quantile(0.5),
        quantile(0.95),
        all[all.len() - 1],
        server.peak_rss_mib()
    );
}

#[test]
fn a_mask_keeps_the_photo_where_it_is_black_and_says_when_it_is_stretched() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&["--styles", &styles_arg(dir.path())]);
    let agent = agent();
    let photo_image = fixtures::gradient_image(48, 32);
    let photo = png_bytes(&photo_image);
    // White on the left half; square, so it is stretched to the 3:2 photo.
    let mask =
        image::GrayImage::from_fn(32, 32, |x, _| image::Luma([if x < 16 { 255 } else { 0 }]));
    let mut mask_png = Vec::new();
    image::DynamicImage::ImageLuma8(mask)
        .write_to(
            &mut std::io::Cursor::new(&mut mask_png),
            image::ImageFormat::Png,
        )
        .unwrap();
    let submitted = post_form(
        &agent,
        &server.url("/api/jobs"),
        &[
            Part::File("photo", "p.png", &photo),
            Part::Text("style", "tiny"),
            Part::File("mask", "left.png", &mask_png),
            Part::Text("feather", "3"),
        ],
        None,
    );
    assert_eq!(submitted.status, 202, "{}", submitted.json());
    let id = submitted.json()["id"].as_str().unwrap().to_string();
    let view = wait_for_job(&agent, &server, &id, Duration::from_secs(60));
    assert_eq!(view["state"], "finished", "{view}");
    assert!(
        view["notes"][0].as_str().unwrap().contains("stretched"),
        "{view}"
    );
    let result = get(&agent, &server.url(view["result"].as_str().unwrap()), None);
    let image = image::load_from_memory(&result.body).unwrap().to_rgb8();
    for y in 0..32 {
        // The stretched mask blurs over about a pixel, the feather over three more.
        for x in 24 + 5..48 {
            assert_eq!(
                image.get_pixel(x, y),
                photo_image.get_pixel(x, y),
                "({x}, {y})"
            );
        }
    }

    let not_a_mask = post_form(
        &agent,
        &server.url("/api/jobs"),
        &[
            Part::File("photo", "p.png", &photo),
            Part::Text("style", "tiny"),
            Part::File("mask", "mask.png", b"not an image"),
        ],
        None,
    );
    assert_eq!(not_a_mask.status, 415, "{}", not_a_mask.json());
    assert!(not_a_mask.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mask"));
}
