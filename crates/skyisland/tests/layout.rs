//! The data directory's layout version: a data directory as servers before the version
//! stamp left it (layout 1: the same directories, no LAYOUT file) is migrated and its
//! caches are used; one written by a newer Sky Island is refused with a clear message and
//! left as it was.

mod support;

use std::process::Command;

use serde_json::json;
use support::{Repo, Sandbox, Server, bin, root_or_skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_layout_is_migrated_and_a_newer_one_refused() {
    if !root_or_skip("an_older_layout_is_migrated_and_a_newer_one_refused") {
        return;
    }
    let sandbox = Sandbox::new();
    let repo = Repo::from_fixture(&sandbox, "acme", "misc", "misc");
    let stamp = sandbox.data_dir().join("LAYOUT");
    let mut server = Server::start(&sandbox);
    assert_eq!(server.data(&repo.import_path, "Hello()").await, "hello");
    assert!(server.stop().success());
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), "2\n", "a new data directory is stamped");

    // Today's layout before the stamp: the same directories, no LAYOUT.
    std::fs::remove_file(&stamp).unwrap();
    let mut server = Server::start(&sandbox);
    assert!(server.log().contains("migrated the data directory's layout"), "{}", server.log());
    let (status, body) = server.call(json!({"url": repo.import_path, "call": "Hello()", "cache": false})).await;
    assert_eq!((status, body["built"].as_bool()), (200, Some(false)), "its binary was kept: {body}");
    assert!(server.stop().success());
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), "2\n");

    // A newer layout: refused, untouched.
    std::fs::write(&stamp, "3\n").unwrap();
    let refused = Command::new(bin()).arg("serve").arg("--config").arg(sandbox.config()).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("has layout 3, written by a newer Sky Island"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), "3\n");
    sandbox.assert_clean();
}
