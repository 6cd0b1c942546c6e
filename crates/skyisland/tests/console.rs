//! The console in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver, both installed by scripts/setup.sh) against a real server with real jails
//! and a real IPv4 pool in a network namespace of the test's own. Every page is visited
//! as a user would, with the keyboard and the mouse; the browser's console must stay free
//! of errors and of Content-Security-Policy violations. Screenshots of every page are saved
//! in `target/console-screenshots/` (the README shows them from `docs/console/`).
//!
//! The browser is kept off the network: background services are off, and every host name
//! but the loopback address resolves to nothing.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{Value, json};
use support::{NetNs, Repo, Sandbox, Server, root_or_skip};

/// Chromium and chromedriver, for one test.
struct Browser {
    client: Client,
    driver: Child,
    /// `SKYISLAND_TEST_BROWSER=<value>` in the environment of chromedriver and of every
    /// process it starts: how they are found to be ended.
    mark: String,
    _profile: tempfile::TempDir,
}

/// The browser's console messages since the last read (chromedriver's log endpoint).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mark = format!("{}-{port}", std::process::id());
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env(BROWSER_MARK, &mark)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup.sh installs chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            // As root, Chromium runs only without its own sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--no-pings",
            "--dns-prefetch-disable",
            "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
            // Nothing but loopback can be reached by name.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": args.iter().copied().chain([&*format!("--user-data-dir={}", profile.path().display())]).collect::<Vec<_>>() }),
        );
        capabilities.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match builder.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Browser { client, driver, mark, _profile: profile }
    }

    /// Console messages since the last call: (level, message).
    async fn log(&self) -> Vec<(String, String)> {
        let entries = self.client.issue_cmd(BrowserLog).await.expect("the browser's log");
        entries
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|e| (e["level"].as_str().unwrap_or("").to_owned(), e["message"].as_str().unwrap_or("").to_owned()))
            .collect()
    }

    /// Fails on any console error or warning since the last call.
    async fn assert_quiet(&self, page: &str) {
        let bad: Vec<_> =
            self.log().await.into_iter().filter(|(level, _)| level == "SEVERE" || level == "WARNING").collect();
        assert!(bad.is_empty(), "{page}: the browser's console has errors: {bad:#?}");
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Waits until `condition` (a JS expression) is true.
    async fn until(&self, what: &str, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let script = format!("return !!({condition});");
        loop {
            if self.js(&script).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let main = self.js("return document.body.innerText").await;
                panic!("{what}: never true: {condition}\nthe page says:\n{}", main.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
    }

    async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn go(&self, server: &Server, route: &str) {
        self.client.goto(&format!("{}/{route}", server.url)).await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// The environment variable that marks one test's browser processes.
const BROWSER_MARK: &str = "SKYISLAND_TEST_BROWSER";

impl Drop for Browser {
    /// Chromium outlives a killed chromedriver, and its crash handlers leave the process
    /// group: every process carrying this browser's mark is killed.
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let mark = format!("{BROWSER_MARK}={}", self.mark);
        for _ in 0..50 {
            let marked: Vec<i32> = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == mark.as_bytes()))
                })
                .collect();
            if marked.is_empty() {
                return;
            }
            for pid in marked {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn screenshots() -> PathBuf {
    support::workspace().join("target/console-screenshots")
}

const POOL_IP: &str = "10.213.16.20";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    if !root_or_skip("the_console_works_in_a_real_browser") {
        return;
    }
    let netns = NetNs::new();
    let mut sandbox = Sandbox::new();
    sandbox.jails_config = "exec_timeout = \"60s\"\n".into();
    sandbox.extra_config = support::ip4_config(&netns, "skyw0", 16, 4);
    let misc = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let url = misc.import_path.clone();
    let mut server = Server::start(&sandbox);
    let browser = Browser::start().await;

    // The page before any token: the status for everyone, no admin data; keyboard first.
    browser.go(&server, "").await;
    browser.until("the status", "document.querySelector('#status')?.textContent === 'ok'").await;
    // How fast it is, for BENCHMARKS.md: printed, not asserted (a timed test would fail on a
    // busy machine). The second load is the one a returning user sees.
    browser.client.refresh().await.unwrap();
    browser.until("the status again", "document.querySelector('#status')?.textContent === 'ok'").await;
    let timing = browser
        .js("const p = performance.getEntriesByName('first-contentful-paint')[0]; \
             const n = performance.getEntriesByType('navigation')[0]; \
             const bytes = performance.getEntriesByType('resource').reduce((sum, r) => sum + r.transferSize, n.transferSize); \
             return [p ? p.startTime : null, n.domContentLoadedEventEnd, n.loadEventEnd, bytes]")
        .await;
    println!(
        "console, loopback: first contentful paint {} ms, DOMContentLoaded {} ms, load {} ms, {} bytes transferred",
        timing[0], timing[1], timing[2], timing[3]
    );
    browser.until("the token notice", "document.querySelector('main .notice') !== null").await;
    assert_eq!(browser.js("return document.querySelector('#calls-total')").await, Value::Null);
    browser.client.find(Locator::Css("body")).await.unwrap().send_keys("\u{e004}").await.unwrap(); // Tab
    assert_eq!(browser.js("return document.activeElement.className").await, json!("skip"), "Tab reaches the skip link");
    browser.assert_quiet("overview without a token").await;

    // A wrong token: the API's error on the page, and no data.
    browser.type_into("#token", "wrong-token").await;
    browser.click("#token-form button[type=submit]").await;
    browser.until("the error", "!document.querySelector('#error').hidden").await;
    let error = browser.text("#error").await;
    assert!(error.contains("403") && error.contains("wrong admin token in the X-Sky-Island-Token header"), "{error}");
    assert_eq!(browser.js("return document.querySelector('#calls-total')").await, Value::Null, "no data");
    // The failed requests are logged by the browser as failed loads (403), nothing else.
    for (level, message) in browser.log().await {
        assert!(level != "SEVERE" || message.contains("403"), "{level}: {message}");
    }

    // The right token: live numbers that move when calls are made.
    browser.click("#forget").await;
    browser.type_into("#token", support::ADMIN_TOKEN).await;
    browser.click("#token-form button[type=submit]").await;
    browser.until("the live numbers", "document.querySelector('#calls-total') !== null").await;
    assert!(browser.js("return document.querySelector('#error').hidden").await == json!(true));
    let before: u64 = browser.text("#calls-total").await.parse().unwrap();
    for _ in 0..3 {
        assert_eq!(server.data(&url, "Hello()").await, "hello");
    }
    browser
        .until(
            "the call count moves",
            &format!("Number(document.querySelector('#calls-total').textContent) >= {}", before + 3),
        )
        .await;
    // For the pictures in docs/console: CONSOLE_HISTORY_SECONDS of mixed calls first, so that
    // the charts have lines (none by default).
    let history = std::env::var("CONSOLE_HISTORY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let until = Instant::now() + Duration::from_secs(history);
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let call = match i % 10 {
            0 => "Nope()".to_owned(),
            1..=3 => format!("Sleep({})", 20 + i % 50),
            _ => "Hello()".to_owned(),
        };
        server.call(json!({ "url": url, "call": call, "cache": i % 10 != 1 })).await;
        tokio::time::sleep(Duration::from_millis(40 + (i % 7) * 20)).await;
    }
    browser.until("the charts", "document.querySelector('#chart-calls path.line') !== null").await;
    browser
        .until("a call in the chart", "document.querySelector('#chart-calls .legend').textContent.includes('ok')")
        .await;
    browser.screenshot("overview").await;
    browser.assert_quiet("overview").await;

    // Try it: a real call, its answer and the command lines.
    browser.go(&server, "#/try").await;
    browser.type_into("#try-url", &url).await;
    browser.type_into("#try-call", "Sleep(5)").await;
    browser.click("#try-submit").await;
    browser.until("the answer", "document.querySelector('#try-status') !== null").await;
    assert_eq!(browser.text("#try-status").await, "200");
    assert_eq!(browser.text("#try-data").await, "slept");
    let curl = browser.text("#try-curl").await;
    assert!(curl.contains("/api/v1/function") && curl.contains(r#""call":"Sleep(5)""#), "{curl}");
    let cli = browser.text("#try-cli").await;
    assert!(cli.starts_with("skyisland call") && cli.contains(&url), "{cli}");
    browser.screenshot("try-it").await;
    // A failing call shows the API's error.
    browser.type_into("#try-call", "Nope()").await;
    browser.click("#try-submit").await;
    browser.until("the error answer", "document.querySelector('#try-status')?.textContent === '422'").await;
    assert!(browser.text("#try-error").await.contains("Nope"), "the error names the function");
    // (The 422 is logged as a failed load.)
    for (level, message) in browser.log().await {
        assert!(level != "SEVERE" || message.contains("422"), "{level}: {message}");
    }

    // Functions: the package with its calls; its page with the invocations.
    browser.go(&server, "#/functions").await;
    browser
        .until("the function", &format!("document.querySelector('#functions-table')?.textContent.includes('{url}')"))
        .await;
    let row =
        browser.js("return [...document.querySelectorAll('#functions-table tbody tr')].map(r => r.innerText)").await;
    assert!(row.to_string().contains("go"), "{row}");
    browser.screenshot("functions").await;
    // The list follows the calls (refreshed every 5 s), keeping its filter.
    browser.type_into("#functions input[type=search]", "misc").await;
    let calls = "Number(document.querySelector('#functions-table tbody tr td:nth-child(5)')?.textContent)";
    let before = browser.js(&format!("return {calls}")).await.as_u64().unwrap();
    assert_eq!(server.data(&url, "Sleep(6)").await, "slept");
    browser.until("the new call counted", &format!("{calls} === {}", before + 1)).await;
    assert!(browser.text("#functions .toolbar").await.contains("1 row"), "the filter holds");
    browser.click("#functions-table tbody a").await;
    browser
        .until(
            "the invocations",
            "document.querySelector('#invocations-table tbody')?.textContent.includes('Sleep(5)')",
        )
        .await;
    assert!(browser.text("#invocations-table").await.contains("Nope()"), "failed calls are listed too");
    browser.screenshot("function").await;
    // cache_bust from the function's page: fetched and built again, the last call made.
    browser.click("#cache-bust").await;
    browser.until("the rebuild", "document.querySelector('#bust-result')?.textContent.includes('printed')").await;
    assert!(browser.text("#bust-result pre").await == "slept", "the last call's answer");
    browser.assert_quiet("functions").await;

    // Jails: a sleeping function appears, with its memory and CPU, and is killed from the page.
    let sleeper = {
        let http = server.http.clone();
        let endpoint = format!("{}/api/v1/function", server.url);
        let body = json!({ "url": url, "call": "Sleep(50000)" });
        tokio::spawn(async move {
            let r = http.post(endpoint).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    browser.go(&server, "#/jails").await;
    browser
        .until("the sleeping jail", "document.querySelector('#jails-table')?.textContent.includes('Sleep(50000)')")
        .await;
    browser
        .until("its memory", "/[0-9.]+ (KiB|MiB)/.test(document.querySelector('#jails-table tbody').textContent)")
        .await;
    browser.screenshot("jails").await;
    browser.click("#jails-table button.kill").await;
    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), sleeper).await.expect("killed").unwrap();
    assert_eq!(status, 500, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("killed by an administrator"), "{answer}");
    browser
        .until("no jail left", "document.querySelector('#jails-table')?.textContent.includes('No jail is running.')")
        .await;
    browser.assert_quiet("jails").await;

    // Network: an address marked unavailable from the page, and the API agrees.
    browser.go(&server, "#/network").await;
    browser.until("the pool", &format!("document.querySelector('[data-ip=\"{POOL_IP}\"]') !== null")).await;
    assert_eq!(browser.text(&format!("[data-ip=\"{POOL_IP}\"]")).await, "Mark unavailable");
    browser.click(&format!("[data-ip=\"{POOL_IP}\"]")).await;
    browser
        .until(
            "the new state",
            &format!("document.querySelector('[data-ip=\"{POOL_IP}\"]')?.textContent === 'Mark available'"),
        )
        .await;
    let state =
        |ips: &Value| ips["ips"].as_array().unwrap().iter().find(|a| a["ip"] == POOL_IP).unwrap()["state"].clone();
    let (_, ips) = server.admin(Method::GET, "/api/v1/admin/ips").await;
    assert_eq!(state(&ips), "unavailable", "{ips}");
    browser.screenshot("network").await;
    browser.click(&format!("[data-ip=\"{POOL_IP}\"]")).await;
    browser
        .until(
            "available again",
            &format!("document.querySelector('[data-ip=\"{POOL_IP}\"]')?.textContent === 'Mark unavailable'"),
        )
        .await;
    let (_, ips) = server.admin(Method::GET, "/api/v1/admin/ips").await;
    assert_eq!(state(&ips), "available", "{ips}");
    browser.assert_quiet("network").await;

    // Async: an invocation with its state; a schedule paused from the page.
    let (status, accepted) = server.call(json!({ "url": url, "call": "Hello()", "async": true })).await;
    assert_eq!(status, 202, "{accepted}");
    let schedule = json!({ "name": "console-hourly", "url": url, "call": "Hello()", "every": "1h" });
    let r = server
        .http
        .post(format!("{}/api/v1/schedules", server.url))
        .header("X-Sky-Island-Token", support::ADMIN_TOKEN)
        .json(&schedule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    browser.go(&server, "#/async").await;
    let id = accepted["id"].as_str().unwrap();
    browser
        .until("the invocation", &format!("document.querySelector('#async-table')?.textContent.includes('{id}')"))
        .await;
    browser
        .until("the schedule", "document.querySelector('#schedules-table')?.textContent.includes('console-hourly')")
        .await;
    browser.click("#schedules-table tbody button").await;
    browser.until("paused", "document.querySelector('#schedules-table tbody button')?.textContent === 'Resume'").await;
    let (_, row) = server.admin(Method::GET, "/api/v1/schedules/console-hourly").await;
    assert_eq!(row["paused"], true, "{row}");
    browser.screenshot("async").await;
    browser.assert_quiet("async").await;

    // Keys: made (shown once, and it works), then revoked after a confirmation.
    browser.go(&server, "#/keys").await;
    browser.until("the keys page", "document.querySelector('#keys-table') !== null").await;
    browser.type_into("#key-name", "console test").await;
    browser.type_into("#key-rate", "50").await;
    browser.click("#key-form button[type=submit]").await;
    browser.until("the new key", "document.querySelector('#key-secret') !== null").await;
    let secret = browser.text("#key-secret").await;
    assert!(secret.starts_with("sky_"), "{secret}");
    let keyed = |key: String| {
        let http = server.http.clone();
        let endpoint = format!("{}/api/v1/function", server.url);
        let body = json!({ "url": url, "call": "Hello()" });
        async move { http.post(endpoint).bearer_auth(key).json(&body).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(keyed(secret.clone()).await, 200, "the new key works");
    browser
        .until("the key listed", "document.querySelector('#keys-table')?.textContent.includes('console test')")
        .await;
    browser.screenshot("keys").await;
    browser.click("#keys-table button[data-key]").await;
    browser.until("the confirmation", "document.querySelector('#confirm').open").await;
    browser.screenshot("keys-revoke").await;
    browser.click("#confirm-ok").await;
    browser.until("the key gone", "!document.querySelector('#keys-table').textContent.includes('console test')").await;
    let (_, keys) = server.admin(Method::GET, "/api/v1/admin/keys").await;
    assert_eq!(keys["count"], 0, "{keys}");
    assert_eq!(keyed(secret).await, 403, "a revoked key is refused at once");
    browser.assert_quiet("keys").await;

    // A phone-width window: every page fits without scrolling sideways.
    browser.client.set_window_size(390, 844).await.unwrap();
    for (route, ready) in [("#/overview", "#calls-total"), ("#/functions", "#functions-table"), ("#/try", "#try-form")]
    {
        browser.go(&server, route).await;
        browser.until(route, &format!("document.querySelector('{ready}') !== null")).await;
        let overflow =
            browser.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        assert!(overflow.as_i64().unwrap() <= 1, "{route} scrolls sideways by {overflow} px at 390 px");
    }
    browser.go(&server, "#/overview").await;
    browser.until("the overview", "document.querySelector('#calls-total') !== null").await;
    browser.screenshot("overview-phone").await;
    browser.assert_quiet("phone width").await;

    // The check above can fail: a style set inline is a CSP violation the console reports.
    browser
        .js("const d = document.createElement('div'); d.setAttribute('style', 'color: red'); document.body.append(d);")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = browser.log().await;
    assert!(
        log.iter().any(|(level, message)| level == "SEVERE" && message.contains("Content Security Policy")),
        "a CSP violation shows in the log: {log:?}"
    );

    drop(browser);
    server.stop();
    sandbox.assert_clean();
}
