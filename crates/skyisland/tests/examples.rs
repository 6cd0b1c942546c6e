//! The functions in examples/ (one per language), served by a real server from git
//! repositories made of their directories, answer what examples/README.md says.

mod support;

use serde_json::json;
use support::{Repo, Sandbox, Server, root_or_skip, workspace};

/// Each row of the table in examples/README.md: directory, call, answer.
fn documented() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(workspace().join("examples/README.md")).unwrap();
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    let rows: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("| [`"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            let dir = cells[0].split("](").nth(1).unwrap().trim_end_matches(')').to_owned();
            (dir, unquote(cells[1]), unquote(cells[2]))
        })
        .collect();
    assert!(rows.len() >= 8, "two calls per language: {rows:?}");
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_answers_as_documented() {
    if !root_or_skip("every_example_answers_as_documented") {
        return;
    }
    let sandbox = Sandbox::new();
    let mut repos = std::collections::BTreeMap::new();
    for dir in ["go", "python", "javascript", "lua"] {
        let fixture = workspace().join("examples").join(dir);
        let repo = Repo::from_dir(&sandbox, "examples", dir, &fixture);
        repos.insert(dir.to_owned(), repo);
    }
    let mut server = Server::start(&sandbox);
    for (dir, call, answer) in documented() {
        let url = &repos[&dir].import_path;
        let (status, body) = server.call(json!({"url": url, "call": call})).await;
        assert_eq!((status, body["data"].as_str()), (200, Some(answer.as_str())), "{dir} {call}: {body}");
    }
    server.stop();
    sandbox.assert_clean();
}
