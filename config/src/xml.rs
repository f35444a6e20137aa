//! uWSGI's XML format: a `<uwsgi>` root, one element per option, an empty element meaning
//! true. `file.xml:id` picks the `<uwsgi id="id">` block of a file holding several.

use std::collections::HashMap;

use crate::expand::{expand_entries, FileInfo, RawEntry};
use crate::source::{Location, Reading};
use crate::ConfigError;

pub(crate) fn read(
    text: &str,
    file: &FileInfo,
    id: Option<&str>,
    outer: &HashMap<String, String>,
) -> Reading {
    let mut reading = Reading::default();
    let whole_file = Location {
        file: file.given.clone(),
        line: 0,
    };
    let doc = match roxmltree::Document::parse(text) {
        Ok(doc) => doc,
        Err(err) => {
            let line = err.pos().row as usize;
            reading.error(
                Location {
                    file: file.given.clone(),
                    line,
                },
                ConfigError::Syntax(format!("not well-formed XML: {err}")),
            );
            return reading;
        }
    };
    let root = doc.root_element();
    // A file may hold one <uwsgi> block as its root, or several inside another element.
    let blocks: Vec<roxmltree::Node> = if root.has_tag_name("uwsgi") {
        vec![root]
    } else {
        root.children()
            .filter(|n| n.has_tag_name("uwsgi"))
            .collect()
    };
    let block = blocks
        .into_iter()
        .find(|n| n.attribute("id") == id || (id.is_none() && n.attribute("id").is_none()));
    let Some(block) = block else {
        let error = match id {
            Some(id) => ConfigError::NoSection(format!("uwsgi id=\"{id}\"")),
            None => ConfigError::Syntax(format!(
                "the root element is <{}>, expected <uwsgi>",
                root.tag_name().name()
            )),
        };
        reading.error(whole_file, error);
        return reading;
    };
    let mut entries = Vec::new();
    for element in block.children().filter(|n| n.is_element()) {
        let line = doc.text_pos_at(element.range().start).row as usize;
        if element.children().any(|n| n.is_element()) {
            reading.error(
                Location {
                    file: file.given.clone(),
                    line,
                },
                ConfigError::Syntax(format!(
                    "<{}> holds other elements: options take text only",
                    element.tag_name().name()
                )),
            );
            continue;
        }
        let text: String = element
            .children()
            .filter_map(|n| n.text())
            .collect::<String>();
        let text = text.trim();
        entries.push(RawEntry {
            name: element.tag_name().name().to_string(),
            value: (!text.is_empty()).then(|| text.to_string()),
            line,
        });
    }
    expand_entries(entries, file, outer, &mut reading);
    reading
}
