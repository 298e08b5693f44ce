//! The `API_CACHE_*` defaults as documented: the README's Configuration table and the
//! table in `cache-runtime/src/config/mod.rs` are parsed here, so that neither can drift from
//! what `CacheConfig` does. Every variable the code reads is in both tables, no table
//! lists one it does not read, and setting a variable to its documented default changes
//! nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cache_runtime::CacheConfig;

/// `variable -> default` from the first Markdown table under a `| variable | default |`
/// header in `text`. `prefix` is what starts each table line (`"//! "` in Rust docs).
fn defaults_table(text: &str, prefix: &str) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        let Some(line) = line.trim_end().strip_prefix(prefix) else {
            if in_table {
                break;
            }
            continue;
        };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| a | b | c |` splits into ["", a, b, c, ""].
        if cells.len() < 4 || !cells[0].is_empty() {
            if in_table {
                break;
            }
            continue;
        }
        if cells[1] == "variable" && cells[2] == "default" {
            in_table = true;
            continue;
        }
        if !in_table || cells[1].starts_with("---") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_owned();
        // `1.0`, or `0` (off): the value is what is in backticks, else the word.
        let default = match (cells[2].find('`'), cells[2].rfind('`')) {
            (Some(open), Some(close)) if close > open => &cells[2][open + 1..close],
            _ => cells[2],
        };
        assert!(
            rows.insert(name.clone(), default.to_owned()).is_none(),
            "{name} twice"
        );
    }
    assert!(!rows.is_empty(), "no `| variable | default |` table found");
    rows
}

fn read(relative: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Every variable `CacheConfig::from_lookup` asks for.
fn variables_read() -> Vec<String> {
    let asked = Mutex::new(Vec::new());
    CacheConfig::from_lookup(|name| {
        asked.lock().unwrap().push(name.to_owned());
        None
    })
    .expect("the defaults are valid");
    asked.into_inner().unwrap()
}

/// The whole configuration, for comparison (`CacheConfig` has no `PartialEq`).
fn render(config: &CacheConfig) -> String {
    format!("{config:?}")
}

fn check_table(source: &str, table: &BTreeMap<String, String>) {
    let mut read: Vec<String> = variables_read();
    read.sort();
    let listed: Vec<String> = table.keys().cloned().collect();
    assert_eq!(
        listed, read,
        "{source}: the variables listed are not the ones CacheConfig reads"
    );
    let defaults = CacheConfig::default();
    for (name, default) in table {
        match default.as_str() {
            "unset" => match name.as_str() {
                "REDIS_URL" => assert!(defaults.redis_url.is_none(), "{source}: {name}"),
                "REDIS_CLUSTER_URLS" => {
                    assert!(defaults.redis_cluster_urls.is_empty(), "{source}: {name}")
                }
                _ => panic!("{source}: only REDIS_URL and REDIS_CLUSTER_URLS are unset"),
            },
            "empty" => match name.as_str() {
                "API_CACHE_DISABLED_RESOURCES" => {
                    assert!(defaults.disabled_resources.is_empty(), "{source}: {name}")
                }
                "API_CACHE_RESOURCE_MODES" => {
                    assert!(defaults.resource_modes.is_empty(), "{source}: {name}")
                }
                "API_CACHE_VERIFY" => {
                    assert!(defaults.verify_shares.is_empty(), "{source}: {name}")
                }
                _ => panic!("{source}: {name} is not a list"),
            },
            value => {
                let set = CacheConfig::from_lookup(|n| (n == name).then(|| value.to_owned()))
                    .unwrap_or_else(|err| panic!("{source}: {name}={value}: {err}"));
                assert_eq!(
                    render(&set),
                    render(&defaults),
                    "{source}: {name}={value} is not the default"
                );
            }
        }
    }
}

#[test]
fn the_readme_configuration_table_states_the_defaults() {
    let readme = defaults_table(&read("../README.md"), "");
    check_table("README.md", &readme);
}

#[test]
fn the_config_module_table_states_the_defaults() {
    let module = defaults_table(&read("../cache-runtime/src/config/mod.rs"), "//! ");
    check_table("cache-runtime/src/config/mod.rs", &module);
}

#[test]
fn a_value_other_than_the_default_is_noticed() {
    // The check above would pass on nothing if setting a variable never changed the
    // configuration: a value that is not the default must render differently.
    let set =
        CacheConfig::from_lookup(|n| (n == "API_CACHE_TIMEOUT_MS").then(|| "31".into())).unwrap();
    assert_ne!(render(&set), render(&CacheConfig::default()));
}
