//! `devsup --livereload` in a real browser: headless Chromium (Debian's,
//! driven by playwright-core) with a page served by a generation of
//! `devsup-page` under devsup, which carries the one-line script tag.
//!
//! Each test synchronises on the browser's events (every page load, with
//! the generation and content it shows) and devsup's log lines.

use devsup_tests::browser::{Browser, PageSite};
use devsup_tests::harness::{TIMEOUT, event};
use serde_json::json;

/// Loads so far, with the generation and content of each.
fn loads(browser: &Browser) -> Vec<(String, String)> {
    browser
        .loads()
        .iter()
        .map(|l| {
            (
                l["gen"].as_str().unwrap_or("?").to_owned(),
                l["content"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

#[test]
fn an_edit_reloads_the_open_page_once_after_ready_and_shows_the_new_generation() {
    // Each new generation takes 300 ms to say READY and accepts nothing
    // before: a script that reloaded on the file change (or on the spawn)
    // would load gen 1's page again. And each old generation goes on
    // accepting for 150 ms after its drain signal: a reload told at READY,
    // not once the old generation is gone, would land on it too.
    let site = PageSite::with_build(
        "version 1",
        true,
        &[
            ("PAGE_READY_DELAY_MS", "300"),
            ("PAGE_DRAIN_DELAY_MS", "150"),
        ],
    );
    let Some(mut browser) = Browser::launch("live reload in Chromium") else {
        return;
    };
    site.devsup.wait_event(1, "ready", TIMEOUT);
    browser.call(json!({"cmd": "open", "url": site.url}));
    let first = browser.wait_load("version 1", TIMEOUT);
    assert_eq!(first["gen"], "1");
    // The page's script has its event stream (it has read the hello).
    browser.call(json!({"cmd": "connected"}));

    site.edit("version 2");
    let reloaded = browser.wait_load("version 2", TIMEOUT);
    assert_eq!(reloaded["gen"], "2", "{reloaded}");
    // devsup told the browser after gen 2's READY, which it logs first.
    let ready = site.devsup.wait_event(2, "ready", TIMEOUT);
    let told = site.devsup.wait_for_line(
        |l: &str| l.contains("gen=2") && l.contains("browser to reload"),
        TIMEOUT,
    );
    let lines = site.devsup.lines();
    let at = |line: &str| lines.iter().position(|l| l == line).unwrap();
    assert!(
        at(&ready) < at(&told),
        "told before ready:\n{ready}\n{told}"
    );
    // The handoff is over (gen 1 gone): any extra reload would have come.
    site.devsup.wait_event(1, "exited", TIMEOUT);
    let stats = browser.call(json!({"cmd": "stats"}));
    assert_eq!(
        loads(&browser),
        [
            ("1".to_owned(), "version 1".to_owned()),
            ("2".to_owned(), "version 2".to_owned())
        ],
        "one reload, showing the new generation"
    );
    assert_eq!(stats["fail"], 0, "{stats}");
}

#[test]
fn a_failed_build_shows_the_overlay_over_the_working_old_page_and_a_fix_reloads() {
    let site = PageSite::with_build("version 1", true, &[]);
    let Some(mut browser) = Browser::launch("the build-error overlay in Chromium") else {
        return;
    };
    site.devsup.wait_event(1, "ready", TIMEOUT);
    browser.call(json!({"cmd": "open", "url": site.url}));
    browser.wait_load("version 1", TIMEOUT);
    browser.call(json!({"cmd": "connected"}));

    site.devsup.mark();
    site.edit("BROKEN version");
    site.devsup
        .wait_for_new("build step 1 failed (exited with status 101)", TIMEOUT);
    let overlay = browser.call(json!({"cmd": "overlay", "present": true}));
    assert_eq!(overlay["present"], true, "{overlay}");
    let text = overlay["text"].as_str().unwrap();
    let html = overlay["html"].as_str().unwrap();
    // The compiler's own words, HTML escaped, its colours rendered.
    assert!(
        text.contains("build failed (exited with status 101)"),
        "{text}"
    );
    assert!(
        text.contains("mismatched types: expected `Vec<T>`, found `&str`"),
        "{text}"
    );
    assert!(text.contains("could not compile `page`"), "{text}");
    assert!(html.contains("Vec&lt;T&gt;"), "{html}");
    assert!(html.contains("<span style=\"color:"), "{html}");
    assert!(!html.contains('\u{1b}') && !text.contains("[0m"), "{html}");
    let shot = devsup_tests::tools::target_dir().join("browser-overlay.png");
    browser.call(json!({"cmd": "screenshot", "path": shot}));
    eprintln!("overlay screenshot: {}", shot.display());

    // The old generation still serves, and the page did not reload.
    let fetched = browser.call(json!({"cmd": "fetch", "path": "/data"}));
    assert_eq!(fetched["ok"], true, "{fetched}");
    assert_eq!(fetched["text"], "gen=1\n", "{fetched}");
    assert_eq!(browser.loads().len(), 1);
    assert_eq!(site.devsup.count_matching(event(2, "spawned")), 0);

    // Dismissed, it stays away until the next failure.
    browser.call(json!({"cmd": "dismiss"}));
    site.devsup.mark();
    site.edit("BROKEN again");
    site.devsup
        .wait_for_new("build step 1 failed (exited with status 101)", TIMEOUT);
    let overlay = browser.call(json!({"cmd": "overlay", "present": true}));
    assert_eq!(overlay["present"], true, "{overlay}");

    // The fix: one reload, to the new generation, and no overlay.
    site.edit("version 3");
    let reloaded = browser.wait_load("version 3", TIMEOUT);
    assert_eq!(reloaded["gen"], "2", "{reloaded}");
    let overlay = browser.call(json!({"cmd": "overlay", "present": false}));
    assert_eq!(overlay["present"], false, "{overlay}");
    site.devsup.wait_event(1, "exited", TIMEOUT);
    assert_eq!(
        loads(&browser),
        [
            ("1".to_owned(), "version 1".to_owned()),
            ("2".to_owned(), "version 3".to_owned())
        ]
    );
}

#[test]
fn twenty_reloads_with_the_page_fetching_in_a_loop_see_no_failed_fetch() {
    const RELOADS: u64 = 20;
    let site = PageSite::new("edit 0", true, &[]);
    let Some(mut browser) = Browser::launch("fetches across reloads in Chromium") else {
        return;
    };
    site.devsup.wait_event(1, "ready", TIMEOUT);
    browser.call(json!({"cmd": "open", "url": format!("{}#fetch", site.url)}));
    browser.wait_load("edit 0", TIMEOUT);
    browser.call(json!({"cmd": "connected"}));
    for edit in 1..=RELOADS {
        let content = format!("edit {edit}");
        site.edit(&content);
        let load = browser.wait_load(&content, TIMEOUT);
        assert_eq!(load["gen"], (edit + 1).to_string(), "{load}");
        // The handoff is over before the next edit, so that each edit is
        // a reload of its own; the page keeps fetching meanwhile.
        site.devsup.wait_event(edit, "exited", TIMEOUT);
        let before = browser.call(json!({"cmd": "stats"}))["ok"]
            .as_u64()
            .unwrap();
        assert!(devsup_tests::harness::wait_until(TIMEOUT, || {
            browser.call(json!({"cmd": "stats"}))["ok"]
                .as_u64()
                .unwrap()
                > before
        }));
    }
    let stats = browser.call(json!({"cmd": "stats"}));
    eprintln!("fetches across {RELOADS} reloads: {stats}");
    assert_eq!(stats["fail"], 0, "{stats}");
    assert!(stats["ok"].as_u64().unwrap() >= RELOADS, "{stats}");
    assert_eq!(
        stats["loads"],
        RELOADS + 1,
        "one load per reload: {:?}",
        loads(&browser)
    );
}

#[test]
fn a_taken_live_reload_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let devsup = devsup_tests::harness::Devsup::builder(dir.path())
        .arg(format!("--livereload={addr}"))
        .arg("--no-watch")
        .spawn();
    devsup.wait_for_line(
        format!("error: cannot listen on {addr} for --livereload"),
        TIMEOUT,
    );
    let status = devsup.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(2), "{}", devsup.log_text());
    assert_eq!(
        devsup.count_matching(event(1, "spawned")),
        0,
        "{}",
        devsup.log_text()
    );
}

#[test]
fn a_page_open_across_a_devsup_restart_reloads_once_the_new_one_is_ready() {
    let mut site = PageSite::new("first run", true, &[]);
    let Some(mut browser) = Browser::launch("live reload across a devsup restart") else {
        return;
    };
    site.devsup.wait_event(1, "ready", TIMEOUT);
    browser.call(json!({"cmd": "open", "url": site.url}));
    browser.wait_load("first run", TIMEOUT);
    browser.call(json!({"cmd": "connected"}));

    // devsup stops: the page stays, its script retries quietly. A new
    // devsup on the same ports numbers its generations from 1 again.
    site.edit("second run");
    site.restart();
    site.devsup.wait_event(1, "ready", TIMEOUT);
    let load = browser.wait_load("second run", TIMEOUT);
    assert_eq!(load["gen"], "1", "{load}");
    assert_eq!(
        loads(&browser),
        [
            ("1".to_owned(), "first run".to_owned()),
            ("1".to_owned(), "second run".to_owned())
        ]
    );
}

/// Issue 22: a browser opened during the first build sees devsup's
/// "building…" page, which turns into the app when gen 1 is ready,
/// without touching the page. The build waits on a fifo the test opens
/// once the page's script has its event stream.
#[test]
fn a_page_opened_during_the_first_build_says_building_then_becomes_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let (devsup, _) = crate::first_minutes::gated_site(dir.path(), "version 1", true, &[]);
    let Some(mut browser) = Browser::launch("the building page in Chromium") else {
        return;
    };
    devsup.wait_for_line("Compiling page v0.1.0 (gated)", TIMEOUT);
    browser.call(json!({"cmd": "open", "url": format!("http://{}/", devsup.addr())}));
    browser.wait_load("building…", TIMEOUT);
    browser.call(json!({"cmd": "connected"}));
    crate::first_minutes::open_gate(dir.path());
    let app = browser.wait_load("version 1", TIMEOUT);
    assert_eq!(app["gen"], "1", "{app}");
    assert_eq!(
        loads(&browser),
        [
            ("?".to_owned(), "building…".to_owned()),
            ("1".to_owned(), "version 1".to_owned())
        ]
    );
    devsup_tests::harness::stop_cleanly(&devsup);
}

/// Issue 22: a failed first build shows its error in the browser (the
/// page and the overlay over it, its `--> FILE:LINE:COL` a link made from
/// `--editor-url`); the fix shows the app.
#[test]
fn a_failed_first_build_shows_its_error_and_the_fix_shows_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let (devsup, _) = crate::first_minutes::gated_site(
        &root,
        "BROKEN",
        false,
        &["--editor-url", "vscode://file/{file}:{line}:{column}"],
    );
    let Some(mut browser) = Browser::launch("a failed first build in Chromium") else {
        return;
    };
    devsup.wait_for_line("build step 1 failed (exited with status 101)", TIMEOUT);
    crate::first_minutes::failed_page(&devsup);
    browser.call(json!({"cmd": "open", "url": format!("http://{}/", devsup.addr())}));
    browser.wait_load("build failed", TIMEOUT);
    browser.call(json!({"cmd": "connected"}));
    let overlay = browser.call(json!({"cmd": "overlay", "present": true}));
    let text = overlay["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("mismatched types: expected `Vec<T>`, found `&str`"),
        "{overlay}"
    );
    let html = overlay["html"].as_str().unwrap_or_default();
    let link = format!(
        "<a class=\"location\" href=\"vscode://file/{}/src/page.txt:1:1\">src/page.txt:1:1</a>",
        root.display()
    );
    assert!(html.contains(&link), "{link} in {html}");
    std::fs::write(root.join("src/page.txt"), "version 2").unwrap();
    let app = browser.wait_load("version 2", TIMEOUT);
    assert_eq!(app["gen"], "1", "{app}");
    let overlay = browser.call(json!({"cmd": "overlay", "present": false}));
    assert_eq!(overlay["present"], false, "{overlay}");
    devsup_tests::harness::stop_cleanly(&devsup);
}
