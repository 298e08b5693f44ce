//! Just enough of the Chrome DevTools protocol to test a page in headless Chromium: launch
//! it with a fresh profile, open a page, evaluate JavaScript, take a PNG screenshot.
//!
//! Chromium is Debian's `chromium` package (`/usr/bin/chromium`, or `$CHROMIUM`). Its
//! absence fails the test with an install hint: a browser test that passes without a
//! browser would prove nothing. The process is killed and its profile removed on drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one protocol call may take. Generous: two shared cores.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One headless Chromium process and its DevTools connection.
pub struct Browser {
    child: Child,
    /// Removed on drop, after the process.
    _profile: tempfile::TempDir,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// A page (tab) of the browser, attached through a flat session.
pub struct Page {
    session: String,
    width: u32,
}

fn chromium_binary() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "headless Chromium is required by this test and was not found at {}: install \
         Debian's package (`apt-get install -y chromium`) or set CHROMIUM to its path",
        path.display()
    );
    path
}

impl Browser {
    /// Starts Chromium headless on a free DevTools port, with a fresh profile.
    pub async fn launch() -> Browser {
        let binary = chromium_binary();
        let profile = tempfile::Builder::new()
            .prefix("api-cache-chromium-")
            .tempdir()
            .expect("create the browser profile directory");
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                // Containers often have a tiny /dev/shm; renderers crash on it.
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));

        // Chromium prints its DevTools address on stderr. Keep reading stderr for the
        // whole run (a full pipe would block the browser) and keep its tail for failures.
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let tail = stderr_tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("ws://") {
                    let _ = address_tx.send(line[at..].trim().to_owned());
                }
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let address = match address_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
                panic!(
                    "Chromium did not announce its DevTools address within 60 s; stderr:\n{}",
                    tail.iter().cloned().collect::<Vec<_>>().join("\n")
                );
            }
        };
        let (socket, _) = tokio_tungstenite::connect_async(address.as_str())
            .await
            .unwrap_or_else(|err| panic!("connect to DevTools at {address}: {err}"));
        Browser {
            child,
            _profile: profile,
            socket,
            next_id: 1,
            stderr_tail,
        }
    }

    /// Sends one command (to the browser, or to a page's session) and returns its result.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap_or_else(|err| panic!("send {method}: {err}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = match tokio::time::timeout(left, self.socket.next()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(err))) => panic!("{method}: DevTools connection failed: {err}"),
                Ok(None) => panic!("{method}: Chromium closed the DevTools connection"),
                Err(_) => panic!("{method}: no answer within {CALL_TIMEOUT:?}"),
            };
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(text.as_str()).expect("DevTools sends JSON");
            // Events (no id) and answers to other calls are not ours.
            if reply["id"] != json!(id) {
                continue;
            }
            if let Some(error) = reply.get("error") {
                panic!("{method} failed: {error}");
            }
            return reply["result"].clone();
        }
    }

    /// Opens `url` in a new page of `width` x `height` CSS pixels and waits for it to load.
    pub async fn open(&mut self, url: &str, width: u32, height: u32) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target_id = target["targetId"].clone();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        let page = Page {
            session: attached["sessionId"]
                .as_str()
                .expect("a session id")
                .to_owned(),
            width,
        };
        self.set_viewport(&page, height).await;
        self.call(Some(&page.session), "Page.navigate", json!({ "url": url }))
            .await;
        self.wait_until(
            &page,
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            Duration::from_secs(30),
        )
        .await;
        page
    }

    async fn set_viewport(&mut self, page: &Page, height: u32) {
        self.call(
            Some(&page.session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": page.width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub async fn evaluate(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(&page.session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `condition` (a JavaScript expression) until it is `true`, or panics.
    pub async fn wait_until(&mut self, page: &Page, condition: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.evaluate(page, condition).await != json!(true) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for `{condition}`"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the whole page (the viewport grows to the content's height, at most
    /// 3000 px), written to `path`; returns its bytes.
    pub async fn screenshot(&mut self, page: &Page, path: &Path) -> Vec<u8> {
        let height = self
            .evaluate(page, "document.documentElement.scrollHeight")
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(200, 3000) as u32;
        self.set_viewport(page, height).await;
        // Let the page redraw its canvas at the new size before the capture.
        self.evaluate(
            page,
            "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))",
        )
        .await;
        let shot = self
            .call(
                Some(&page.session),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the screenshot directory");
        }
        std::fs::write(path, &png).expect("write the screenshot");
        png
    }

    /// Chromium's last lines on stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Asks Chromium to quit, and waits a moment for it to.
    pub async fn close(mut self) {
        let id = self.next_id;
        let message = json!({ "id": id, "method": "Browser.close" });
        let _ = self.socket.send(Message::text(message.to_string())).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
