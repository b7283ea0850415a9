//! moto's standalone S3 server (the Python package `moto[server]`) for the S3 sink's tests
//! and the bench's S3 destination: a real S3 implementation, not a double of ours.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};

/// moto's standalone S3 server, stopped on drop.
pub struct Moto {
    child: std::process::Child,
    pub url: String,
}

impl Moto {
    /// The server's process id (for its CPU and memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `python3 -m moto.server` on a free loopback port and waits until it answers.
    pub async fn start() -> Moto {
        let found = std::process::Command::new("python3")
            .args(["-c", "import moto.server"])
            .output();
        assert!(
            matches!(&found, Ok(o) if o.status.success()),
            "the S3 tests need moto's standalone server: pip install 'moto[server]' \
             (`python3 -c 'import moto.server'` failed: {found:?})"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 starts");
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if http
                .get(format!("{}/moto-api/data.json", moto.url))
                .send()
                .await
                .is_ok()
            {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto did not answer on {} within 60s", moto.url);
    }

    /// An SDK client with keys moto accepts while authentication is off.
    pub fn client(&self) -> Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .force_path_style(true)
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .build();
        Client::from_conf(config)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
    }

    /// Turns moto's authentication on after `requests` more requests: from then on only
    /// keys of IAM users it knows are accepted (`InvalidAccessKeyId` otherwise).
    pub async fn authenticate_after(&self, requests: u64) {
        let answer = reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.url))
            .body(requests.to_string())
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }

    /// Every object of `bucket`: key -> its lines (gunzipped).
    pub async fn objects(&self, bucket: &str) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        self.each_object(bucket, |key, text| {
            out.insert(key, text.lines().map(str::to_string).collect());
        })
        .await;
        out
    }

    /// The lines in all objects of `bucket`, holding one object at a time.
    pub async fn count_lines(&self, bucket: &str) -> u64 {
        let mut n = 0;
        self.each_object(bucket, |_, text| n += text.lines().count() as u64)
            .await;
        n
    }

    /// Hands each object of `bucket` (its key and gunzipped text) to `f`, one at a time.
    async fn each_object(&self, bucket: &str, mut f: impl FnMut(String, &str)) {
        let client = self.client();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                let key = o.key().unwrap().to_string();
                let body = client
                    .get_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap()
                    .body
                    .collect()
                    .await
                    .unwrap()
                    .into_bytes();
                let mut text = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut text)
                    .unwrap_or_else(|e| panic!("{key} is not gzip: {e}"));
                assert!(text.ends_with('\n'), "{key}: whole lines");
                f(key, &text);
            }
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
