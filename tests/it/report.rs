//! `mirotrail report` in a real headless browser (Debian's `chromium`): the page renders,
//! every chart has the store's data, names holding markup are shown as text and never
//! run, the console stays empty and the page makes no network request. A probe page
//! first proves the same checks catch a console error, a script and a fetch.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mirotrail::sentinel_content::{ViewShape, views};
use mirotrail_emulator::UnixMs;
use mirotrail_emulator::miro::{Faults, MARKUP_NAME_SUFFIX, Scenario};

use crate::support::*;

/// What a page did in the browser.
struct Rendered {
    dom: String,
    /// Console messages (Chromium logs every one as `...:CONSOLE...`).
    console: Vec<String>,
    /// URLs the page itself requested (the browser's own background requests have no
    /// origin as initiator and are left out).
    requests: Vec<String>,
}

/// Loads `page` in headless Chromium (fresh profile in `dir`), dumps its DOM and takes
/// a screenshot to `screenshot`.
async fn render(page: &Path, dir: &Path, screenshot: &Path) -> Rendered {
    let profile = dir.join("chromium-profile");
    let net_log = dir.join("net-log.json");
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        // Nothing this browser asks for leaves the machine; requests are still logged.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1400,2400",
        "--hide-scrollbars",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.display()));
    args.push(format!("--log-net-log={}", net_log.display()));
    let url = format!("file://{}", page.display());
    let run = |extra: String| {
        let mut cmd = tokio::process::Command::new("chromium");
        cmd.args(&args).arg(extra).arg(&url).kill_on_drop(true);
        async move {
            match tokio::time::timeout(Duration::from_secs(120), cmd.output()).await {
                Err(_) => panic!("chromium did not finish within 2 minutes"),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "chromium is not installed: this test needs Debian's `chromium` package \
                     (apt-get install -y chromium), as .ci/run installs it"
                ),
                Ok(Err(e)) => panic!("cannot run chromium: {e}"),
                Ok(Ok(out)) => out,
            }
        }
    };
    let out = run("--dump-dom".into()).await;
    assert!(out.status.success(), "chromium --dump-dom: {}", text(&out));
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    let requests = page_requests(&net_log);
    let shot = run(format!("--screenshot={}", screenshot.display())).await;
    assert!(
        shot.status.success(),
        "chromium --screenshot: {}",
        text(&shot)
    );
    Rendered {
        dom,
        console,
        requests,
    }
}

/// The URLs of requests a document started, from Chromium's net log.
fn page_requests(net_log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(net_log).expect("chromium wrote its net log");
    // A log cut short by the browser's exit lacks its closing brackets.
    let log: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .expect("the net log is JSON");
    let mut urls: Vec<String> = log["events"]
        .as_array()
        .expect("net log events")
        .iter()
        .filter_map(|e| {
            let p = &e["params"];
            let initiator = p["initiator"].as_str()?;
            let url = p["url"].as_str()?;
            (initiator != "not an origin").then(|| url.to_string())
        })
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// The `<svg class="chart" ...>...</svg>` of view `id` in the DOM.
fn chart<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("data-view=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart for {id}"));
    let start = dom[..start].rfind("<svg").unwrap();
    let end = start + dom[start..].find("</svg>").unwrap();
    &dom[start..end]
}

fn attr_numbers(svg: &str, attr: &str) -> Vec<u64> {
    svg.split(&format!("{attr}=\""))
        .skip(1)
        .map(|s| s[..s.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The checks below can fail: a page with a console error, a script, an image from the
/// network and markup is caught by each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_checks_catch_a_console_error_a_script_and_a_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("probe.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><title>probe</title></head><body>\
         <img src=\"http://192.0.2.7/x.png\"><script>console.error('probe'); document.title='ran'</script>\
         </body></html>",
    )
    .unwrap();
    let r = render(&page, dir.path(), &dir.path().join("probe.png")).await;
    assert!(
        r.console.iter().any(|l| l.contains("probe")),
        "{:?}",
        r.console
    );
    assert_eq!(r.requests, ["http://192.0.2.7/x.png"]);
    assert!(r.dom.contains("<title>ran</title>"), "{}", r.dom);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_renders_every_view_with_data_and_runs_no_markup() {
    let now = UnixMs::now();
    let mut org = org(
        3000,
        600,
        now.minus(Duration::from_secs(2 * 86_400)),
        now.minus(Duration::from_secs(120)),
    );
    org.faults = Faults {
        markup_in_names: true,
        ..Faults::default()
    };
    // `run` evaluates the rules, so the alerts section shows what they raised.
    org.scenarios = vec![Scenario::BruteForce];
    // Shown in the page's header, so the markup is on the page whatever rows are shown.
    org.org_name = format!("Northwind{MARKUP_NAME_SUFFIX}");
    let env = Env::start(org).await;
    let cfg = env.config(
        "[sources.audit_logs]\ninitial_lookback = \"3d\"\n\n[sources.content_logs]\nenabled = true\ninitial_lookback = \"3d\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    let out = env.run(&["run", "--config", cfg, "--once"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = env
        .run(
            &[
                "report",
                "--config",
                cfg,
                "--since",
                "7d",
                "--out",
                "report.html",
            ],
            TOKEN,
        )
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let page: PathBuf = env.dir.path().join("report.html");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("report.html"),
        "{}",
        text(&out)
    );

    let screenshot = env.dir.path().join("report.png");
    let r = render(&page, env.dir.path(), &screenshot).await;
    assert!(r.console.is_empty(), "console messages: {:?}", r.console);
    assert!(r.requests.is_empty(), "the page requested {:?}", r.requests);
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot"
    );

    // It rendered: the title is ours, and the markup in names is text, not elements.
    assert!(
        r.dom.contains("<title>Miro activity report</title>"),
        "{}",
        &r.dom[..r.dom.len().min(2000)]
    );
    let lower = r.dom.to_lowercase();
    assert!(
        !lower.contains("<script"),
        "a script element made it into the page"
    );
    assert!(
        !lower.contains("<img"),
        "an img element made it into the page"
    );
    assert!(!r.dom.contains("markup ran</title>"));
    let shown = MARKUP_NAME_SUFFIX
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        r.dom.contains(&shown[..40]),
        "the names with markup are shown as text"
    );

    // Every chart has data; the time series count every stored row.
    let audit = count(&env.db(), "MiroAuditLogs_CL");
    let content = count(&env.db(), "MiroContentLogs_CL");
    assert!(audit > 2000 && content > 400, "{audit} {content}");
    for view in views() {
        match view.shape {
            ViewShape::Table => {
                let start = r.dom.find(&format!("id=\"{}\"", view.id)).unwrap();
                let section = &r.dom[start..start + r.dom[start..].find("</section>").unwrap()];
                assert!(
                    section.matches("<tr>").count() > 1,
                    "{}: {section}",
                    view.id
                );
            }
            ViewShape::TimeSeries | ViewShape::Bars => {
                let svg = chart(&r.dom, view.id);
                let total = attr_numbers(svg, "data-total")[0];
                let bars = attr_numbers(svg, "data-count");
                assert!(total > 0, "{}: no data", view.id);
                assert!(bars.iter().all(|&n| n > 0), "{}: {bars:?}", view.id);
                assert_eq!(bars.iter().sum::<u64>(), total, "{}", view.id);
                let expected = match view.id {
                    "events-by-category" => Some(audit),
                    "content-activity" => Some(content),
                    _ => None,
                };
                if let Some(n) = expected {
                    assert_eq!(i64::try_from(total).unwrap(), n, "{}", view.id);
                }
            }
        }
    }
    assert!(
        r.dom.contains("data-view=\"alerts-by-severity\""),
        "the injected brute force raised an alert shown on the page"
    );
}

/// Bad input gets a message saying what to change: a `--since` that is not a time, one in
/// the future, a store `run` never wrote; the workbook prints as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_errors_say_what_to_fix_and_the_workbook_prints() {
    let now = UnixMs::now();
    let env = Env::start(org(10, 0, now.minus(Duration::from_secs(3600)), now)).await;
    let cfg = env.config("");
    let cfg = cfg.to_str().unwrap();
    let out = env.run(&["report", "--config", cfg], TOKEN).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("has `mirotrail run` collected into it yet?"),
        "{}",
        text(&out)
    );
    for since in ["last week", "2999-01-01T00:00:00Z"] {
        let out = env
            .run(&["report", "--config", cfg, "--since", since], TOKEN)
            .await;
        assert_eq!(out.status.code(), Some(2), "{since}: {}", text(&out));
        assert!(text(&out).contains("--since"), "{since}: {}", text(&out));
    }
    assert!(!env.dir.path().join("report.html").exists());
    let out = env.run(&["template", "workbook"], TOKEN).await;
    assert!(out.status.success(), "{}", text(&out));
    let workbook: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(workbook["version"], "Notebook/1.0");
    let out = env.run(&["template", "azure"], TOKEN).await;
    let template: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let types: Vec<&str> = template["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert!(types.contains(&"Microsoft.Insights/workbooks"), "{types:?}");
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "Microsoft.OperationalInsights/workspaces/savedSearches")
            .count(),
        4,
        "the four ASIM parsers"
    );
}
