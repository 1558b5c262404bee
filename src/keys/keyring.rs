//! Every configured key name, looked up by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::Error;
use super::named_key::NamedKey;

/// The key name an empty request field means.
pub const DEFAULT_KEY: &str = "default";

/// Every configured key name.
#[derive(Debug)]
pub struct Keyring {
    keys: BTreeMap<String, Arc<NamedKey>>,
}

impl Keyring {
    /// A keyring over loaded key names.
    pub fn new(keys: impl IntoIterator<Item = NamedKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|k| (k.name().to_owned(), Arc::new(k)))
                .collect(),
        }
    }

    /// The key `name` (empty means `default`).
    pub fn get(&self, name: &str) -> Result<&Arc<NamedKey>, Error> {
        let name = if name.is_empty() { DEFAULT_KEY } else { name };
        self.keys
            .get(name)
            .ok_or_else(|| Error::UnknownKey(name.to_owned()))
    }

    /// All key names in order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<NamedKey>> {
        self.keys.values()
    }
}
