//! A real browser for tests: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver) with `thirtyfour`.
//!
//! chromedriver runs in its own process group, which is killed as a whole
//! when the [`Browser`] is dropped, so no Chromium outlives a failed test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use thirtyfour::prelude::*;
use thirtyfour::{ChromiumLikeCapabilities, DesiredCapabilities};

use crate::eventually;
use crate::redis::free_port;

/// Where Debian puts them; `CHROMIUM` / `CHROMEDRIVER` override.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    pub driver: WebDriver,
    chromedriver: Child,
    _profile: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("chromedriver", &self.chromedriver.id())
            .finish_non_exhaustive()
    }
}

/// A profile directory of its own per browser, removed afterwards.
#[derive(Debug)]
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium.
    ///
    /// # Panics
    /// If Chromium or chromedriver is missing: install the Debian packages
    /// `chromium` and `chromium-driver` (scripts/test.sh does).
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts chromedriver and a headless Chromium with `extra` command
    /// line arguments (e.g. `--ignore-certificate-errors` for a gateway's
    /// self-signed certificate).
    ///
    /// # Panics
    /// As [`Browser::start`].
    pub async fn start_with(extra: &[&str]) -> Self {
        let chromedriver_path =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        let chromium_path = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        for path in [&chromedriver_path, &chromium_path] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} not found: browser tests need Debian's chromium and chromium-driver \
                 (scripts/test.sh installs them)"
            );
        }
        let port = free_port();
        let chromedriver = {
            use std::os::unix::process::CommandExt;
            crate::process::die_with_parent(&mut Command::new(&chromedriver_path))
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts")
        };
        let server = format!("http://127.0.0.1:{port}");
        let client = crate::app::http_client();
        eventually(
            Duration::from_secs(15),
            "chromedriver to answer",
            || async {
                client
                    .get(format!("{server}/status"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
            },
        )
        .await;

        let profile = TempDir(std::env::temp_dir().join(format!("chat-tests-chromium-{port}")));
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(&chromium_path).expect("binary capability");
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.0.display()),
        ] {
            caps.add_arg(arg).expect("argument capability");
        }
        for arg in extra {
            caps.add_arg(arg).expect("argument capability");
        }
        let driver = WebDriver::new(&server, caps)
            .await
            .expect("a Chromium session");
        Browser {
            driver,
            chromedriver,
            _profile: profile,
        }
    }

    /// Starts a browser and loads `url`: a page of the origin under test,
    /// so scripts run there are same-origin.
    pub async fn start_on(url: &str) -> Self {
        let browser = Self::start().await;
        browser.driver.goto(url).await.expect("page loads");
        browser
    }

    /// Runs `script` in the page with `arguments[0]` = `argument`.
    pub async fn run_with(&self, script: &str, argument: Value) -> Value {
        self.driver
            .execute(script, vec![argument])
            .await
            .expect("script runs")
            .json()
            .clone()
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.driver
            .execute(script, Vec::new())
            .await
            .expect("script runs")
            .json()
            .clone()
    }

    /// Waits until `expression` (JavaScript) is truthy in the page and
    /// returns its value.
    pub async fn wait_for(&self, expression: &str, within: Duration) -> Value {
        let script = format!("return ({expression});");
        eventually(within, expression, || async {
            let value = self.run(&script).await;
            let truthy =
                !matches!(value, Value::Null | Value::Bool(false)) && value != 0 && value != "";
            truthy.then_some(value)
        })
        .await
    }

    /// Ends the session and the browser.
    pub async fn quit(self) {
        let _ = self.driver.clone().quit().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium it started.
        let group = format!("-{}", self.chromedriver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.chromedriver.wait();
    }
}
