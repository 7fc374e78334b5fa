//! The axum example under devsup with `DEVSUP_LIVERELOAD` in its
//! environment (as devsup sets it with `--livereload`): its HTML page gets
//! the live-reload script tag, its plain-text answer does not.

#[cfg(unix)]
use devsup_tests::harness::{Devsup, TIMEOUT};
#[cfg(unix)]
use devsup_tests::http;

#[cfg(unix)]
#[test]
fn html_pages_get_the_livereload_script() {
    let dir = tempfile::tempdir().unwrap();
    let devsup = Devsup::builder(dir.path())
        .arg("--no-watch")
        .env("DEVSUP_LIVERELOAD", "http://127.0.0.1:35729")
        .server(env!("CARGO_BIN_EXE_example-axum"))
        .spawn();
    devsup.wait_event(1, "ready", TIMEOUT);
    let addr = devsup.addr();

    let page = http::get(addr, "/page").unwrap();
    assert_eq!(page.status, 200);
    let body = page.body.clone();
    let tag = r#"<script src="http://127.0.0.1:35729/devsup-livereload.js" defer></script>"#;
    assert!(body.contains(&format!("{tag}</body>")), "{body}");
    assert_eq!(
        page.header("content-length"),
        Some(body.len().to_string().as_str())
    );

    let root = http::get(addr, "/").unwrap();
    assert_eq!(root.generation(), Some(1));
    assert!(!root.body.contains("<script"));
}

/// This test runs devsup through the Unix-only harness: elsewhere, one loud line.
#[cfg(not(unix))]
#[test]
fn unix_only() {
    eprintln!(
        "!!! SKIPPED this test: it runs devsup through devsup-tests' harness, which is Unix only"
    );
}
