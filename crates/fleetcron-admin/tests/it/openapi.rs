//! The OpenAPI document against the live server: every documented response (path, method, status) is
//! produced by a real request, and every real answer's body matches the documented schema — strictly:
//! a field the document does not declare is an error too, so code and document cannot drift apart.

use crate::api::{scenario, unreachable_scenario};
use crate::support::*;
use fleetcron_admin::AdminOptions;
use serde_json::Value;
use std::collections::BTreeSet;

/// Resolves `#/components/schemas/Name`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "dangling $ref {reference}");
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unknown JSON Schema type {other}"),
    }
}

/// Validates `value` against `schema`; errors name the JSON path.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|option| {
                let mut inner = Vec::new();
                validate(doc, option, value, at, &mut inner);
                inner.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!("{at}: matches {matching} of the oneOf options: {value}"));
        }
        return;
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            validate(doc, part, value, at, errors);
        }
        return;
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(name)) => vec![name.as_str()],
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|name| type_matches(name, value)) {
        errors.push(format!("{at}: expected {types:?}, got {value}"));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time") {
        if let Some(text) = value.as_str() {
            if chrono::DateTime::parse_from_rfc3339(text).is_err() {
                errors.push(format!("{at}: {text} is not an RFC 3339 date-time"));
            }
        }
    }
    if let (Some(minimum), Some(number)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
        if number < minimum {
            errors.push(format!("{at}: {number} is below the minimum {minimum}"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    errors.push(format!("{at}: required field {name} is missing"));
                }
            }
        }
        for (name, field) in object {
            match properties.and_then(|properties| properties.get(name)) {
                Some(field_schema) => validate(doc, field_schema, field, &format!("{at}.{name}"), errors),
                None if properties.is_some() => errors.push(format!("{at}: field {name} is not documented")),
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{index}]"), errors);
        }
    }
}

/// Whether a concrete path matches a documented template (`{x}` is one percent-encoded segment).
fn matches(template: &str, path: &str) -> bool {
    let template: Vec<&str> = template.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    template.len() == path.len()
        && template
            .iter()
            .zip(&path)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_response_is_produced_and_matches_the_live_server() {
    let mut exchanges = scenario(Backend::Sqlite).await;
    exchanges.extend(unreachable_scenario().await);
    // /metrics with a Prometheus recorder of its own (not installed process-wide).
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let store = TestStore::new(Backend::Sqlite);
    let served = Served::start(&store.url, tasks(), AdminOptions::new(auth()).metrics(handle)).await;
    let client = Client::new(&served.base);
    assert_eq!(client.get("/metrics", Some(READ)).await.0, 200);
    let (code, doc) = client.get("/api/openapi.json", None).await;
    assert_eq!(code, 200);
    exchanges.extend(client.log.lock().expect("log").clone());
    served.stop().await;

    assert!(
        doc["openapi"].as_str().is_some_and(|version| version.starts_with("3.")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: BTreeSet<(String, String, u16)> = BTreeSet::new();
    for (template, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            for status in operation["responses"].as_object().expect("responses").keys() {
                documented.insert((template.clone(), method.to_uppercase(), status.parse().expect("status")));
            }
        }
    }
    let mut produced: BTreeSet<(String, String, u16)> = BTreeSet::new();
    let mut errors = Vec::new();
    let mut checked = 0;
    for exchange in &exchanges {
        let Some(template) = paths.keys().find(|template| matches(template, &exchange.path)) else {
            continue; // The dashboard and unknown routes are not part of the API.
        };
        let method = exchange.method.to_lowercase();
        let Some(operation) = paths[template].get(&method) else {
            continue; // A wrong method (405) on purpose.
        };
        let key = (template.clone(), exchange.method.clone(), exchange.status);
        let Some(response) = operation["responses"].get(exchange.status.to_string()) else {
            errors.push(format!(
                "{} {} answered {}, which the document does not list: {}",
                exchange.method, exchange.path, exchange.status, exchange.body
            ));
            continue;
        };
        produced.insert(key);
        let content = response["content"].as_object().expect("documented content");
        let (media, media_schema) = content.iter().next().expect("one media type");
        assert!(
            exchange.content_type.starts_with(media.as_str()),
            "{} {}: content type {} but documented {media}",
            exchange.method,
            exchange.path,
            exchange.content_type
        );
        let value = if media == "application/json" {
            serde_json::from_str(&exchange.body).expect("JSON body")
        } else {
            Value::String(exchange.body.clone())
        };
        validate(
            &doc,
            &media_schema["schema"],
            &value,
            &format!("{} {} {}", exchange.method, exchange.path, exchange.status),
            &mut errors,
        );
        checked += 1;
    }
    assert!(
        errors.is_empty(),
        "the live server disagrees with its document:\n{}",
        errors.join("\n")
    );
    let missing: Vec<_> = documented.difference(&produced).collect();
    assert!(missing.is_empty(), "documented responses no test produced: {missing:?}");
    assert!(checked > 50, "only {checked} responses checked");
}

#[test]
fn the_validator_rejects_what_it_must() {
    let doc = serde_json::json!({"components": {"schemas": {"A": {
        "type": "object", "required": ["n"],
        "properties": {"n": {"type": "integer"}, "at": {"type": ["string", "null"], "format": "date-time"}}
    }}}});
    let schema = serde_json::json!({"$ref": "#/components/schemas/A"});
    let check = |value: Value| {
        let mut errors = Vec::new();
        validate(&doc, &schema, &value, "$", &mut errors);
        errors
    };
    assert!(check(serde_json::json!({"n": 1, "at": null})).is_empty());
    assert!(!check(serde_json::json!({"n": "1"})).is_empty());
    assert!(!check(serde_json::json!({})).is_empty());
    assert!(!check(serde_json::json!({"n": 1, "extra": true})).is_empty());
    assert!(!check(serde_json::json!({"n": 1, "at": "yesterday"})).is_empty());
}
