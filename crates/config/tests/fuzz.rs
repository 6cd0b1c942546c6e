//! Property tests of the configuration loader, generated from the schema itself: every key
//! the configuration has (found by serialising one with every optional part set) gets
//! random values of its own kind — numbers across their whole range, sizes and durations
//! from zero to absurd, strings of its shape and of no shape — one key at a time on top of
//! a valid file. Each result is a configuration whose numbers the code can carry, or a
//! one-line error naming that key; and a fair share of the inputs must be accepted, so
//! the test exercises more than the first refusal.

use std::path::Path;

use proptest::prelude::*;
use skyisland_config::{Config, ConfigError};

/// A configuration with every optional part present, as TOML.
fn full() -> toml::Table {
    let mut config = Config::default();
    config.network.ip4 = Some(Default::default());
    config.statsd_addr = Some("127.0.0.1:8125".parse().unwrap());
    config.cache.redis_url = Some("redis://127.0.0.1:6379".into());
    config.admin.token = Some("a-token-of-sixteen".into());
    config.rate_limit.per_second = Some(50.0);
    config.rate_limit.burst = Some(100);
    toml::Table::try_from(&config).unwrap()
}

/// Every leaf key, dotted, with its value in the full configuration.
fn leaves(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) if !inner.is_empty() && path != "git.url_rewrite" => leaves(inner, &path, out),
            other => out.push((path, other.clone())),
        }
    }
}

fn keys() -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    leaves(&full(), "", &mut out);
    out
}

/// A random value of the kind `example` is.
fn value_like(example: &toml::Value) -> BoxedStrategy<toml::Value> {
    let size = (0u64..1 << 50, prop::sample::select(vec!["B", "KiB", "MiB", "GiB", "TiB"]))
        .prop_map(|(n, unit)| toml::Value::String(format!("{}{unit}", n >> 20)));
    let span = (0u64..1 << 40, prop::sample::select(vec!["ms", "s", "m", "h", "d", "y"]))
        .prop_map(|(n, unit)| toml::Value::String(format!("{}{unit}", n >> 20)));
    let int = prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        -10i64..10,
        0i64..100_000,
        any::<i64>(),
    ]
    .prop_map(toml::Value::Integer);
    let float = prop_oneof![
        Just(0.0),
        Just(1e-30),
        Just(-1.0),
        Just(f64::INFINITY),
        Just(f64::NAN),
        Just(1e300),
        0.0f64..4.0,
        any::<f64>()
    ]
    .prop_map(toml::Value::Float);
    let text = "\\PC{0,24}".prop_map(toml::Value::String);
    match example {
        toml::Value::Integer(_) => prop_oneof![4 => int, 1 => text].boxed(),
        toml::Value::Float(_) => prop_oneof![4 => float, 1 => int].boxed(),
        toml::Value::Boolean(_) => prop_oneof![any::<bool>().prop_map(toml::Value::Boolean), text].boxed(),
        toml::Value::String(s)
            if s.parse::<skyisland_config::Size>().is_ok() && s.chars().any(|c| c.is_ascii_digit()) =>
        {
            if s.ends_with('s') || s.ends_with('h') || s.ends_with('d') || s.ends_with('m') {
                prop_oneof![4 => span, 4 => size, 1 => text].boxed()
            } else {
                prop_oneof![4 => size, 1 => text].boxed()
            }
        }
        toml::Value::String(s) if s.parse::<skyisland_config::Span>().is_ok() => {
            prop_oneof![4 => span, 1 => text].boxed()
        }
        toml::Value::String(s) => {
            let kept = s.clone();
            prop_oneof![
                2 => Just(toml::Value::String(kept.clone())),
                2 => "[a-zA-Z0-9/._:-]{0,24}".prop_map(toml::Value::String),
                1 => (Just(kept), "[ /.:a-z0-9]{1,3}").prop_map(|(s, tail)| toml::Value::String(format!("{s}{tail}"))),
                1 => text,
            ]
            .boxed()
        }
        toml::Value::Array(items) => {
            let item = items.first().cloned().unwrap_or(toml::Value::String(String::new()));
            prop::collection::vec(value_like(&item), 0..4).prop_map(toml::Value::Array).boxed()
        }
        other => Just(other.clone()).boxed(),
    }
}

/// One key set to a value of its kind, on top of a valid configuration.
fn one_key() -> impl Strategy<Value = (String, toml::Value)> {
    prop::sample::select(keys()).prop_flat_map(|(key, example)| (Just(key), value_like(&example)))
}

fn set(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap();
    let mut at = table;
    for part in parts {
        at = at.entry(part).or_insert_with(|| toml::Value::Table(Default::default())).as_table_mut().unwrap();
    }
    at.insert(last.to_owned(), value);
}

/// What the code derives from a configuration it accepted, computed as it does: none of it
/// may overflow or panic.
fn derived_values_fit(config: &Config) {
    let now = std::time::Instant::now();
    let j = &config.jails;
    for span in [j.exec_timeout, j.build_timeout, config.limits.client_timeout, config.limits.drain] {
        assert!(now.checked_add(span.get() * 2).is_some(), "{span}");
    }
    assert!(j.memory_limit.bytes().checked_add(j.disk_limit.bytes()).is_some());
    assert!(j.build_memory_limit.bytes().checked_add(j.build_disk_limit.bytes()).is_some());
    if let Some(rate) = config.rate_limit.per_second {
        // The token bucket refills one token every 1/rate seconds.
        assert!(std::time::Duration::try_from_secs_f64(1.0 / rate).is_ok(), "{rate}");
    }
    // The CPU quota per 100 ms period.
    assert!((j.cpu_limit * 100_000.0) as u64 >= 1);
    assert!(j.uid_base.checked_add(j.max_jails + 1).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn every_key_takes_a_usable_value_or_a_one_line_error_naming_it(case in prop::collection::vec(one_key(), 1..2)) {
        let mut table = full();
        let (key, value) = case[0].clone();
        set(&mut table, &key, value.clone());
        let text = toml::to_string(&table).unwrap();
        match Config::parse(&text, Path::new("fuzz.toml")) {
            Ok(config) => derived_values_fit(&config),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!message.contains('\n'), "{}", message);
                prop_assert!(message.starts_with("fuzz.toml"), "{}", message);
                let leaf = key.rsplit('.').next().unwrap();
                match &e {
                    ConfigError::Invalid { .. } => {
                        prop_assert!(e.key().is_some_and(|k| key.starts_with(k) || k.starts_with(&key) || k.contains(leaf)) || message.contains(leaf),
                            "{} = {} gave an error naming another key: {}", key, value, message);
                    }
                    _ => prop_assert!(message.contains(leaf) || message.contains("invalid"), "{} = {}: {}", key, value, message),
                }
            }
        }
    }
}

#[test]
fn a_fair_share_of_the_generated_values_is_accepted() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut accepted, total) = (0, 2000);
    for _ in 0..total {
        let (key, value) = one_key().new_tree(&mut runner).unwrap().current();
        let mut table = full();
        set(&mut table, &key, value);
        accepted += usize::from(Config::parse(&toml::to_string(&table).unwrap(), Path::new("f.toml")).is_ok());
    }
    assert!(accepted * 5 >= total, "only {accepted} of {total} generated configurations were accepted");
    assert!(accepted * 20 <= total * 19, "{accepted} of {total} accepted: the values are not random enough");
}

#[test]
fn the_schema_has_the_keys_this_test_relies_on() {
    let names: Vec<String> = keys().into_iter().map(|(k, _)| k).collect();
    for key in
        ["jails.exec_timeout", "rate_limit.per_second", "network.ip4.cidr", "limits.max_body", "go.binary_memory"]
    {
        assert!(names.iter().any(|n| n == key), "{key} in {names:?}");
    }
    assert!(names.len() > 60, "{} keys", names.len());
}
