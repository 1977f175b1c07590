//! Identifiers and names.
//!
//! Names come from the operator's config and are compared byte for byte.
//! Ids come from the store (small integers) or from a cloud (opaque strings).
//! Each gets its own type so that a label can never be passed where a provider is expected.

use std::fmt;

/// The longest name nodepool accepts: names end up in database columns and cloud metadata values,
/// both of which cap strings at 255 characters.
pub const MAX_NAME_LEN: usize = 255;

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty or only whitespace.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] characters.
    #[error("name is {len} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// The length of the rejected name, in characters.
        len: usize,
    },
    /// The name starts or ends with whitespace, which is almost always a typo.
    #[error("name has leading or trailing whitespace")]
    Whitespace,
    /// The name contains a control character (a newline, a tab, ...).
    #[error("name contains the control character {0:?}")]
    Control(char),
}

fn check_name(name: &str) -> Result<(), NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty);
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong { len });
    }
    if name.trim() != name {
        return Err(NameError::Whitespace);
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(NameError::Control(c));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps a name.
            ///
            /// # Errors
            ///
            /// Returns a [`NameError`] if the name is empty, longer than 255 characters,
            /// has leading or trailing whitespace or contains a control character.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_name(&name)?;
                Ok(Self(name))
            }

            /// The name as written in the config.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// The name of a cloud provider (`providers[].name`), unique within a config.
    ProviderName
);
name_type!(
    /// The name of a label (`labels[].name`): what CI jobs ask for.
    LabelName
);
name_type!(
    /// The name of an image (`providers[].images[].name`); the same name on several
    /// providers means equivalent images.
    ImageName
);

macro_rules! id_type_impl {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw id.
            pub const fn new(id: u64) -> Self {
                Self(id)
            }

            /// The raw id.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    };
}

pub(crate) use id_type_impl as id_type;

id_type!(
    /// The store's id of a node.
    NodeId
);
id_type!(
    /// The store's id of one image upload: one version of an image on one provider.
    ImageId
);
id_type!(
    /// The store's id of a node request.
    RequestId
);

/// An id given by a cloud: a server id, an image id, a floating IP id.
///
/// It is opaque; nodepool only stores it and hands it back to the same provider.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExternalId(String);

impl ExternalId {
    /// Wraps a cloud id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as the cloud wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ExternalId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl From<String> for ExternalId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The id of one nodepool installation: made at random when its store is first created,
/// and put on every cloud resource it creates, so that its servers and images can be told
/// apart from those of another installation sharing the same cloud project.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstallationId(String);

impl InstallationId {
    /// Wraps an installation id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as stored and tagged.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
