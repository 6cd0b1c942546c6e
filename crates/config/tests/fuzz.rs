//! Property tests (fuzzing) of the configuration loader: any text gives a configuration
//! or a one-line error naming the problem, never a panic.

use std::path::Path;

use proptest::prelude::*;
use skyisland_config::Config;

fn toml_soup() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("[jails]".to_owned()),
        Just("[cache]".to_owned()),
        Just("[limits]".to_owned()),
        Just("[network.ip4]".to_owned()),
        Just("[rate_limit]".to_owned()),
        "[a-z_]{1,20} = \"[0-9a-zA-Z./:]{0,12}\"",
        "[a-z_]{1,20} = -?[0-9]{1,25}",
        "(memory_limit|max_jails|exec_timeout|cidr|range|per_second|max_body|redis_url) = (\"[0-9a-zA-Z./: ]{0,12}\"|-?[0-9.e]{1,12})",
        "\\PC{0,30}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn any_text_is_a_configuration_or_a_one_line_error(text in toml_soup()) {
        match Config::parse(&text, Path::new("fuzz.toml")) {
            Ok(config) => prop_assert!(config.validate().is_ok()),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!message.contains('\n'), "{}", message);
                prop_assert!(!message.is_empty());
            }
        }
    }
}
