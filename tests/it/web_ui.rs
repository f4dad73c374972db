//! The web UI, end to end in a real headless Chromium driven over
//! chromedriver (fantoccini): the process list, its actions and its form
//! against `opm list`, the live logs of the process page, the token screen,
//! and a server's agents page acting on an agent's process. Everything
//! listens on 127.0.0.1 only.
//!
//! Without `chromium` and `chromedriver` the browser tests fail under
//! `CI=true` and are recorded as skipped elsewhere (`common::require`;
//! `.ci/run` installs both). With `OPM_SCREENSHOTS=DIR` they also
//! save the screenshots of the README there (`scripts/screenshots.sh`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common::http::{tcp, Auth};
use crate::common::prereq::which;
use crate::common::{free_port, kill_pid, require, unique, wait_until, TestHome};

/// How long the page may take to show a change (it polls every 2 s).
const UI_DEADLINE: Duration = Duration::from_secs(30);

/// One browser at a time: the browser tests are heavy and gain nothing from overlap.
static BROWSER_LOCK: Mutex<()> = Mutex::new(());

/// A port that was free a moment ago on 127.0.0.1.
/// Writes `config.toml` into a home before its daemon starts.
fn write_config(home: &TestHome, text: &str) {
    std::fs::write(home.join("config.toml"), text).expect("write config.toml");
}

/// The browser and its driver: `OPM_TEST_CHROMIUM` / `OPM_TEST_CHROMEDRIVER`
/// when set (a name on the PATH or a path), else found on the PATH.
fn tools() -> (Option<PathBuf>, Option<PathBuf>) {
    let pick = |var: &str, names: &[&str]| match std::env::var(var) {
        Ok(v) => which(&v),
        Err(_) => names.iter().find_map(|n| which(n)),
    };
    (
        pick(
            "OPM_TEST_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        ),
        pick("OPM_TEST_CHROMEDRIVER", &["chromedriver"]),
    )
}

/// Runs `body` with a fresh browser; without one, fails under CI and
/// records the skip elsewhere (`common::require`).
fn with_browser(body: impl FnOnce(&Browser)) {
    let (browser, driver) = tools();
    let mut missing = Vec::new();
    if browser.is_none() {
        missing
            .push("no chromium (apt-get install chromium; OPM_TEST_CHROMIUM names another)".into());
    }
    if driver.is_none() {
        missing.push(
            "no chromedriver (apt-get install chromium-driver; OPM_TEST_CHROMEDRIVER names another)".into(),
        );
    }
    if !require(missing) {
        return;
    }
    let (Some(browser), Some(driver)) = (browser, driver) else {
        unreachable!("require returned true, so both were found");
    };
    let _one = BROWSER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let b = Browser::start(&browser, &driver);
    body(&b);
}

/// A headless Chromium session over a chromedriver this test started.
/// Dropping it ends the session and kills the driver's process group.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(browser: &Path, driver: &Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::Builder::new()
            .prefix("opm-it-chromium-")
            .tempdir()
            .expect("a browser profile folder");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so the drop can end it and every browser process it started.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut b = Browser {
            rt,
            client: None,
            driver: child,
            _profile: profile,
        };
        wait_until(Duration::from_secs(20), "chromedriver to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let caps = json!({
            "goog:chromeOptions": {
                "binary": browser,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--window-size=1280,800", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        // chromedriver listens before it serves, and under load it may drop
        // the first session request (a connection reset): ask again until
        // a deadline, then fail with the last error.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = b.rt.block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{port}")),
            );
            match attempt {
                Ok(client) => break client,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("no chromium session yet ({e}); asking again");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("a chromium session from chromedriver: {e}"),
            }
        };
        b.client = Some(client);
        b
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    fn goto(&self, url: &str) {
        self.rt
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    fn refresh(&self) {
        self.rt.block_on(self.client().refresh()).expect("reload");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt
            .block_on(self.client().execute(script, args))
            .unwrap_or_else(|e| panic!("run {script:?}: {e}"))
    }

    /// The text of the first element matching `css`, if there is one.
    fn text(&self, css: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(css)],
        )
        .as_str()
        .map(str::to_string)
    }

    fn exists(&self, css: &str) -> bool {
        self.js(
            "return document.querySelector(arguments[0]) !== null;",
            vec![json!(css)],
        ) == json!(true)
    }

    /// Whether an element matching `css` is displayed (rendered with a size).
    fn visible(&self, css: &str) -> bool {
        self.js(
            "const e = document.querySelector(arguments[0]); \
             return !!e && e.getClientRects().length > 0;",
            vec![json!(css)],
        ) == json!(true)
    }

    /// What a user sees: the page's rendered text.
    fn body_text(&self) -> String {
        self.js("return document.body.innerText;", vec![])
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Clicks like a user (a WebDriver element click), waiting for the element.
    #[track_caller]
    fn click(&self, css: &str) {
        wait_until(UI_DEADLINE, &format!("to click {css}"), || {
            self.rt
                .block_on(async { self.client().find(Locator::Css(css)).await?.click().await })
                .is_ok()
        });
    }

    /// Types `text` into the field `css` like a user.
    #[track_caller]
    fn fill(&self, css: &str, text: &str) {
        wait_until(UI_DEADLINE, &format!("to type into {css}"), || {
            self.rt
                .block_on(async {
                    let e = self.client().find(Locator::Css(css)).await?;
                    e.clear().await?;
                    e.send_keys(text).await
                })
                .is_ok()
        });
    }

    fn url(&self) -> String {
        self.rt
            .block_on(self.client().current_url())
            .expect("current url")
            .to_string()
    }

    fn set_size(&self, w: u32, h: u32) {
        self.rt
            .block_on(self.client().set_window_size(w, h))
            .expect("resize the window");
    }

    /// Saves a PNG of the page to `$OPM_SCREENSHOTS/NAME` when that is set.
    fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("OPM_SCREENSHOTS") else {
            return;
        };
        // At rest: no toast, and the pointer off every button.
        self.js(
            "document.querySelectorAll('.toast').forEach(t => t.remove());",
            vec![],
        );
        let away = MouseActions::new("mouse".into()).then(PointerAction::MoveTo {
            duration: None,
            x: 1.0,
            y: 1.0,
        });
        let _ = self.rt.block_on(self.client().perform_actions(away));
        // The window fits the page's height, so the picture has no empty band.
        let (w, h) = self
            .rt
            .block_on(self.client().get_window_size())
            .expect("the window size");
        let fit = self.js(
            "return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom) \
             + (window.outerHeight - window.innerHeight);",
            vec![],
        );
        let fit = fit.as_u64().map_or(h, |f| f.clamp(320, 1400));
        self.set_size(w as u32, fit as u32);
        let png = self
            .rt
            .block_on(self.client().screenshot())
            .expect("a screenshot");
        self.set_size(w as u32, h as u32);
        let path = Path::new(&dir).join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("saved {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session, which quits the browser.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        let pgid = self.driver.id() as i32;
        // SAFETY: killpg only sends a signal, to the group this test created
        // for chromedriver (and the browser it started).
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        kill_pid(pgid, libc::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// The row of the process `name` in the page's table.
fn row(name: &str) -> String {
    format!("tr.proc[data-name=\"{name}\"]")
}

/// The `status` of `name` in the page, if the page lists it.
fn page_status(b: &Browser, name: &str) -> Option<String> {
    b.js(
        "const r = document.querySelector(arguments[0]); return r ? r.dataset.status : null;",
        vec![json!(row(name))],
    )
    .as_str()
    .map(str::to_string)
}

/// The `status` of `name` in `opm list` of `home`.
fn listed_status(home: &TestHome, name: &str) -> Option<String> {
    home.list()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["status"].as_str().map(str::to_string))
}

/// Signs in on the login screen with `token`.
fn sign_in(b: &Browser, token: &str) {
    wait_until(UI_DEADLINE, "the login screen", || b.visible("#token"));
    b.fill("#token", token);
    b.click("#login button[type=submit]");
}

/// A GET on 127.0.0.1:`port` (with the token when given): (status, body).
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or(Auth::None, Auth::Token);
    let r = tcp(port, "GET", path, auth, None);
    (r.status, r.text())
}

/// Waits until the TCP API of a daemon answers `GET /health`.
fn wait_for_api(port: u16) {
    wait_until(Duration::from_secs(20), "the TCP API to answer", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && http_get(port, "/health", None).0 == 200
    });
}

#[test]
fn the_page_is_served_without_a_token_and_its_data_is_not() {
    let home = TestHome::new();
    let port = free_port();
    write_config(
        &home,
        &format!(
            "[daemon.web]\nui = true\nport = {port}\n[daemon.web.secure]\nenabled = true\ntoken = \"tok-{}-0123456789\"\n",
            std::process::id()
        ),
    );
    home.opm(&["daemon", "restore"]).ok();
    wait_for_api(port);
    let (status, page) = http_get(port, "/", None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/ui/app.js"), "{page}");
    for asset in ["/ui/app.js", "/ui/app.css"] {
        let (status, body) = http_get(port, asset, None);
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 1000, "{asset} is served whole");
    }
    let (status, body) = http_get(port, "/daemon/list", None);
    assert_eq!(status, 401, "the data stays protected: {body}");
    let token = format!("tok-{}-0123456789", std::process::id());
    assert_eq!(http_get(port, "/daemon/list", Some(&token)).0, 200);

    // Without ui, the API serves no page.
    let plain = TestHome::new();
    let port = free_port();
    write_config(
        &plain,
        &format!("[daemon.web]\napi = true\nport = {port}\n"),
    );
    plain.opm(&["daemon", "restore"]).ok();
    wait_for_api(port);
    assert_eq!(http_get(port, "/", None).0, 404);
    assert_eq!(http_get(port, "/ui/app.js", None).0, 404);
}

#[test]
fn the_process_list_acts_and_the_process_page_streams_its_logs() {
    let home = TestHome::new();
    let port = free_port();
    write_config(&home, &format!("[daemon.web]\nport = {port}\n"));
    home.opm(&["daemon", "restore", "--webui"]).ok();
    let mark = unique("hello");
    // Prints a first line, then another once the file `go` appears.
    let chatty = format!(
        "sh -c 'echo first-{mark}; while [ ! -e go ]; do sleep 0.05; done; echo live-{mark}; exec sleep 1000'"
    );
    home.start(&chatty, "api", &[]);
    home.start("sleep 1000", "worker", &[]);
    wait_for_api(port);
    // No token was configured: the daemon generated one.
    let token = home.token();

    with_browser(|b| {
        let base = format!("http://127.0.0.1:{port}/");
        b.goto(&base);
        sign_in(b, &token);
        // The page lists what the CLI started, live.
        wait_until(
            UI_DEADLINE,
            "the page to list api and worker online",
            || {
                page_status(b, "api").as_deref() == Some("online")
                    && page_status(b, "worker").as_deref() == Some("online")
            },
        );
        let pid = home.process("api")["pid"].to_string();
        assert_eq!(
            b.text(&format!("{} .c-pid", row("api"))).as_deref(),
            Some(pid.as_str())
        );
        let health = b.text("#health").unwrap_or_default();
        assert!(
            health.contains("standalone") && health.contains("v0."),
            "{health}"
        );

        // Stop from the page: stopped in the page and for the CLI.
        b.click(&format!("{} button[data-action=stop]", row("worker")));
        wait_until(UI_DEADLINE, "worker to be stopped in the page", || {
            page_status(b, "worker").as_deref() == Some("stopped")
        });
        assert_eq!(listed_status(&home, "worker").as_deref(), Some("stopped"));

        // Start one from the form: the CLI sees it.
        b.click("#new-toggle");
        b.fill("#new-name", "cron");
        b.fill("#new-command", "sleep 1001");
        b.click("#new-submit");
        wait_until(UI_DEADLINE, "cron to be online in opm list", || {
            listed_status(&home, "cron").as_deref() == Some("online")
        });
        wait_until(UI_DEADLINE, "cron to be online in the page", || {
            page_status(b, "cron").as_deref() == Some("online")
        });
        let cron = home.process("cron");
        assert_eq!(cron["command"], "sleep 1001");
        b.screenshot("processes.png");

        // The process page: what it printed, then a line printed while watching.
        b.click(&format!("{} .c-name a", row("api")));
        wait_until(UI_DEADLINE, "the log to show the first line", || {
            b.text("#log")
                .is_some_and(|t| t.contains(&format!("first-{mark}")))
        });
        wait_until(UI_DEADLINE, "the stream to be live", || {
            b.text(".live").as_deref() == Some("live")
        });
        std::fs::write(home.join("go"), "").expect("touch go");
        wait_until(UI_DEADLINE, "the live line in the page", || {
            b.text("#log")
                .is_some_and(|t| t.contains(&format!("live-{mark}")))
        });
        assert!(b.url().contains("#/p/"), "{}", b.url());

        // Remove asks for a second click, then the process is gone for the CLI too.
        b.goto(&base);
        let remove = format!("{} button[data-action=remove]", row("worker"));
        b.click(&remove);
        wait_until(UI_DEADLINE, "remove to ask for confirmation", || {
            b.text(&format!("{remove} .label")).as_deref() == Some("Sure?")
        });
        assert!(
            listed_status(&home, "worker").is_some(),
            "one click removes nothing"
        );
        b.click(&remove);
        wait_until(UI_DEADLINE, "worker to be gone from opm list", || {
            listed_status(&home, "worker").is_none()
        });
        wait_until(UI_DEADLINE, "worker to be gone from the page", || {
            !b.exists(&row("worker"))
        });

        // A narrow window: the list still shows every process and its actions.
        b.set_size(420, 800);
        b.goto(&base);
        wait_until(UI_DEADLINE, "the narrow list", || {
            page_status(b, "cron").as_deref() == Some("online")
                && b.visible(&format!("{} button[data-action=stop]", row("cron")))
        });
        b.screenshot("processes-narrow.png");
    });
}

#[test]
fn with_security_the_page_asks_for_the_token_and_shows_nothing_without_it() {
    let home = TestHome::new();
    let port = free_port();
    let token = unique("token");
    write_config(
        &home,
        &format!(
            "[daemon.web]\nui = true\nport = {port}\n[daemon.web.secure]\nenabled = true\ntoken = \"{token}\"\n"
        ),
    );
    home.start("sleep 1000", "private-job", &[]);
    wait_for_api(port);

    with_browser(|b| {
        let base = format!("http://127.0.0.1:{port}/");
        b.goto(&base);
        wait_until(UI_DEADLINE, "the login screen", || b.visible("#token"));
        let text = b.body_text();
        assert!(
            !text.contains("private-job"),
            "shown without a token: {text}"
        );
        assert!(!b.visible("#top"), "the header waits for the token");
        b.screenshot("login.png");

        // A wrong token is refused and says so.
        sign_in(b, "not-the-token");
        wait_until(UI_DEADLINE, "the page to say the token is wrong", || {
            b.text("#login-error")
                .is_some_and(|t| t.to_lowercase().contains("wrong token"))
        });
        assert!(!b.body_text().contains("private-job"));
        assert!(!b.exists(&row("private-job")));

        // The right one opens the page, and is kept for the tab only.
        sign_in(b, &token);
        wait_until(UI_DEADLINE, "the list after signing in", || {
            page_status(b, "private-job").as_deref() == Some("online")
        });
        assert!(!b.url().contains(&token), "the token is not in the URL");
        assert_eq!(
            b.js("return document.cookie;", vec![]),
            json!(""),
            "no cookie"
        );
        assert_eq!(
            b.js("return sessionStorage.getItem('opm.token');", vec![]),
            json!(token)
        );
        assert_eq!(
            b.js("return localStorage.length;", vec![]),
            json!(0),
            "nothing kept beyond the session"
        );

        // Asked once: a reload keeps the session.
        b.refresh();
        wait_until(UI_DEADLINE, "the list after a reload", || {
            page_status(b, "private-job").is_some()
        });
        assert!(!b.visible("#token"));

        // Signing out forgets it.
        b.click("#logout");
        wait_until(UI_DEADLINE, "the login screen after signing out", || {
            b.visible("#token")
        });
        assert!(!b.body_text().contains("private-job"));
        assert_eq!(
            b.js("return sessionStorage.getItem('opm.token');", vec![]),
            Value::Null
        );
    });
}

#[test]
fn on_a_server_the_agents_page_shows_an_agent_and_stops_its_process() {
    let server = TestHome::new();
    let agent = TestHome::new();
    let port = free_port();
    let agent_port = free_port();
    let token = unique("server-token");
    write_config(
        &server,
        &format!(
            "role = \"server\"\n[daemon.web]\napi = true\nui = true\nport = {port}\n\
             [daemon.web.secure]\nenabled = true\ntoken = \"{token}\"\n\
             [server]\nheartbeat_interval_ms = 500\n\
             [daemon.history]\nagent_interval_ms = 200\n"
        ),
    );
    server.opm(&["daemon", "restore"]).ok();
    wait_for_api(port);
    let mark = unique("from-the-agent");
    agent.start("sleep 1000", "remote-job", &[]);
    agent.start(
        &format!("sh -c 'echo {mark}; exec sleep 1001'"),
        "remote-web",
        &[],
    );
    agent
        .opm(&[
            "agent",
            "connect",
            &format!("http://127.0.0.1:{port}"),
            "--name",
            "a1",
            "--token",
            &crate::common::roles::join_token_of(&server),
            "--api-address",
            &format!("127.0.0.1:{agent_port}"),
        ])
        .ok();

    with_browser(|b| {
        b.goto(&format!("http://127.0.0.1:{port}/"));
        sign_in(b, &token);
        wait_until(UI_DEADLINE, "the server's health in the header", || {
            b.text("#health").is_some_and(|t| t.contains("server"))
        });
        b.click("a[data-nav=agents]");
        let agent_row = "tr.agent[data-name=\"a1\"]";
        wait_until(UI_DEADLINE, "a1 online on the agents page", || {
            b.js(
                "const r = document.querySelector(arguments[0]); return r ? r.dataset.status : null;",
                vec![json!(agent_row)],
            ) == json!("online")
        });
        let host = b.text(&format!("{agent_row} .a-host")).unwrap_or_default();
        assert!(!host.is_empty(), "the agent's hostname is shown");
        wait_until(UI_DEADLINE, "the agent's process counts", || {
            b.text(&format!("{agent_row} .a-procs"))
                .is_some_and(|t| t.starts_with("2/2"))
        });
        b.screenshot("agents.png");

        // The agent's processes, and a stop carried out through the server.
        b.click(&format!("{agent_row} .a-name a"));
        wait_until(UI_DEADLINE, "the agent's processes", || {
            page_status(b, "remote-job").as_deref() == Some("online")
                && page_status(b, "remote-web").as_deref() == Some("online")
        });
        // The agent's totals, charted from the server's history of its heartbeats.
        wait_until(UI_DEADLINE, "the agent's memory chart to fill", || {
            data_num(b, "figure.chart-memory", "points").is_some_and(|n| n >= 3.0)
                && data_num(b, "figure.chart-memory", "last").is_some_and(|m| m > 0.0)
        });
        b.click(&format!("{} button[data-action=stop]", row("remote-job")));
        wait_until(UI_DEADLINE, "remote-job stopped on the agent", || {
            listed_status(&agent, "remote-job").as_deref() == Some("stopped")
        });
        wait_until(UI_DEADLINE, "remote-job stopped in the page", || {
            page_status(b, "remote-job").as_deref() == Some("stopped")
        });
        assert_eq!(
            listed_status(&agent, "remote-web").as_deref(),
            Some("online")
        );
        assert!(
            server.list().is_empty(),
            "the server itself runs nothing: the stop went to the agent"
        );
        b.screenshot("agent.png");

        // The page of an agent's process: its details and what it printed, through the server.
        b.click(&format!("{} .c-name a", row("remote-web")));
        wait_until(UI_DEADLINE, "the agent process's output", || {
            b.text("#log").is_some_and(|t| t.contains(&mark))
        });
        assert!(b.url().contains("#/agents/a1/p/"), "{}", b.url());
        // The facts and the log arrive by separate requests: wait for both.
        let command = format!("sh -c 'echo {mark}; exec sleep 1001'");
        wait_until(UI_DEADLINE, "the agent process's command", || {
            b.text("dd[data-fact=Command]").as_deref() == Some(command.as_str())
        });
    });
}

/// A number in a `data-*` attribute of the first element matching `css`.
fn data_num(b: &Browser, css: &str, key: &str) -> Option<f64> {
    b.js(
        "const e = document.querySelector(arguments[0]); \
         const v = e ? e.dataset[arguments[1]] : null; return v ? Number(v) : null;",
        vec![json!(css), json!(key)],
    )
    .as_f64()
}

#[test]
fn the_charts_fill_as_a_process_grows_and_the_timeline_shows_a_crash_and_its_restart() {
    if !require(crate::common::needs().tool("python3", "python3").done()) {
        return;
    }
    let home = TestHome::new();
    let port = free_port();
    write_config(
        &home,
        &format!("[daemon.web]\nui = true\nport = {port}\n[daemon.history]\ninterval_ms = 200\nsamples = 60\n"),
    );
    home.opm(&["daemon", "restore"]).ok();
    // Once the file `go` exists, grows by 4 MiB (touched) every 200 ms, up to 96 MiB, then holds.
    let grow = "python3 -c \"import os, time\nwhile not os.path.exists('go'): time.sleep(0.05)\nb = []\nfor i in range(24):\n    x = bytearray(4 << 20); x[::4096] = b'x' * len(x[::4096]); b.append(x); time.sleep(0.2)\ntime.sleep(1000)\"";
    home.start(grow, "grow", &[]);
    home.start("sh -c 'sleep 0.5; exit 3'", "crashy", &[]);
    wait_for_api(port);
    let token = home.token();

    with_browser(|b| {
        b.goto(&format!("http://127.0.0.1:{port}/"));
        sign_in(b, &token);
        // A sparkline per row, drawn from the history.
        let spark = format!("{} .c-trend svg.spark", row("grow"));
        wait_until(UI_DEADLINE, "grow's sparkline to have samples", || {
            data_num(b, &spark, "points").is_some_and(|n| n >= 2.0)
        });
        let label = b
            .js(
                "return document.querySelector(arguments[0]).getAttribute('aria-label');",
                vec![json!(spark)],
            )
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            label.contains("Memory of grow: last") && label.contains("max"),
            "{label}"
        );

        // The process page: its memory chart fills and rises as it allocates.
        b.click(&format!("{} .c-name a", row("grow")));
        let mem = "figure.chart-memory";
        wait_until(UI_DEADLINE, "the memory chart to show samples", || {
            data_num(b, mem, "points").is_some_and(|n| n >= 3.0)
        });
        let first = data_num(b, mem, "last").unwrap_or(0.0);
        let points = data_num(b, mem, "points").unwrap_or(0.0);
        std::fs::write(home.join("go"), "").expect("touch go");
        wait_until(UI_DEADLINE, "the memory chart to rise by 16 MiB", || {
            data_num(b, mem, "last").is_some_and(|m| m > first + 16.0 * 1024.0 * 1024.0)
                && data_num(b, mem, "points").is_some_and(|n| n > points)
        });
        let path = b
            .js(
                "return document.querySelector('figure.chart-memory path.line').getAttribute('d');",
                vec![],
            )
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            path.starts_with('M') && path.matches('L').count() >= 3,
            "{path}"
        );
        let summary = b
            .js(
                "return document.querySelector('figure.chart-memory svg').getAttribute('aria-label');",
                vec![],
            )
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            summary.starts_with("Memory: last") && summary.contains("min"),
            "{summary}"
        );
        assert!(b.exists("figure.chart-cpu svg title"));
        wait_until(UI_DEADLINE, "grow to hold its 96 MiB", || {
            data_num(b, mem, "last").is_some_and(|m| m > 90.0 * 1024.0 * 1024.0)
        });
        b.screenshot("process.png");

        // The crashing process: an exit with its code, then its restart, on the timeline.
        b.goto(&format!("http://127.0.0.1:{port}/"));
        b.click(&format!("{} .c-name a", row("crashy")));
        wait_until(UI_DEADLINE, "an exit and a restart on the timeline", || {
            b.exists(".timeline li[data-kind=exited]")
                && b.exists(".timeline li[data-kind=restarted]")
        });
        let exited = b
            .text(".timeline li[data-kind=exited] .detail")
            .unwrap_or_default();
        assert!(exited.contains("exit code 3"), "{exited}");
        assert!(
            data_num(b, ".timeline", "count").is_some_and(|n| n >= 3.0),
            "started, exited, restarted at least"
        );
        assert!(b.exists(".timeline svg.strip rect.tone-bad title"));
        b.screenshot("process-crash.png");
        // The Events page: both processes' events, the crash loop's among them.
        b.click("a[data-nav=events]");
        wait_until(UI_DEADLINE, "the events page", || {
            b.exists(".events.named li[data-kind=restarted]")
        });
        b.screenshot("events.png");
    });
    home.opm(&["remove", "all"]).ok();
}

/// How many times the page fetched `/daemon/list` (from its resource timings).
fn list_fetches(b: &Browser) -> u64 {
    b.js(
        "return performance.getEntriesByType('resource') \
           .filter(e => new URL(e.name).pathname === '/daemon/list').length;",
        vec![],
    )
    .as_u64()
    .unwrap_or(0)
}

#[test]
fn changes_arrive_by_server_sent_events_and_the_page_polls_nothing() {
    let home = TestHome::new();
    let port = free_port();
    // History ticks a minute apart: any refresh within the test comes from an event.
    write_config(
        &home,
        &format!("[daemon.web]\nui = true\nport = {port}\n[daemon.history]\ninterval_ms = 60000\n"),
    );
    home.opm(&["daemon", "restore"]).ok();
    home.start("sleep 1000", "steady", &[]);
    wait_for_api(port);
    let token = home.token();

    with_browser(|b| {
        b.goto(&format!("http://127.0.0.1:{port}/"));
        sign_in(b, &token);
        wait_until(UI_DEADLINE, "steady in the list", || {
            page_status(b, "steady").as_deref() == Some("online")
        });
        // Started from the CLI: the page shows it without a reload.
        b.js("window.__same_page = true;", vec![]);
        home.start("sh -c 'sleep 4; exit 3'", "late", &["--no-autorestart"]);
        wait_until(UI_DEADLINE, "late to appear in the page", || {
            page_status(b, "late").as_deref() == Some("online")
        });
        // While nothing happens, the page asks for nothing: a poll every 2 s
        // (what the page did before) would have fetched the list again.
        let quiet = list_fetches(b);
        let t0 = b
            .js("return performance.now();", vec![])
            .as_f64()
            .unwrap_or(0.0);
        wait_until(UI_DEADLINE, "2.5 s of the page's time", || {
            b.js("return performance.now();", vec![])
                .as_f64()
                .unwrap_or(0.0)
                > t0 + 2500.0
                || page_status(b, "late").as_deref() != Some("online")
        });
        if page_status(b, "late").as_deref() == Some("online") {
            assert_eq!(list_fetches(b), quiet, "the list was fetched with no event");
        }
        // late exits: its new status arrives by the events stream, on the same page.
        wait_until(UI_DEADLINE, "late's exit in the page", || {
            page_status(b, "late").is_some_and(|s| s != "online")
        });
        // Not restarted (--no-autorestart): `exited`, with its code on hover.
        assert_eq!(page_status(b, "late").as_deref(), Some("exited"));
        assert_eq!(
            b.js("return window.__same_page === true;", vec![]),
            json!(true),
            "no reload"
        );
        assert!(list_fetches(b) > quiet, "the exit made the page refresh");

        // The Events page: everything, filtered by kind.
        b.click("a[data-nav=events]");
        wait_until(UI_DEADLINE, "late's exit on the events page", || {
            b.exists(".timeline li[data-kind=exited]")
                && b.exists(".timeline li[data-kind=started]")
        });
        b.js(
            "const s = document.querySelector('#event-kind'); s.value = 'exited'; \
             s.dispatchEvent(new Event('change'));",
            vec![],
        );
        wait_until(UI_DEADLINE, "only exits on the events page", || {
            b.exists(".timeline li[data-kind=exited]")
                && !b.exists(".timeline li[data-kind=started]")
        });
        let detail = b
            .text(".timeline li[data-kind=exited] .detail")
            .unwrap_or_default();
        assert!(detail.contains("exit code 3"), "{detail}");
        b.js(
            "const s = document.querySelector('#event-kind'); s.value = ''; \
             s.dispatchEvent(new Event('change'));",
            vec![],
        );
        wait_until(UI_DEADLINE, "every kind again", || {
            b.exists(".timeline li[data-kind=started]")
        });
    });
    home.opm(&["remove", "all"]).ok();
}
