//! OVSDB values (RFC 7047 §5.1): atoms, sets and maps, with their exact wire form.
//!
//! Sets and maps are kept canonical (sorted, without duplicate elements/keys) so that two
//! values compare equal exactly when they mean the same thing, and so that the symmetric
//! difference of `update2` modifications is a linear merge.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use uuid::Uuid;

/// One OVSDB atom.
#[derive(Debug, Clone)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(String),
    /// `["uuid", "…"]`
    Uuid(Uuid),
    /// `["named-uuid", "…"]`: a row inserted earlier in the same transaction.
    NamedUuid(String),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    /// The atomic type name as used in schemas ("integer", "string", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Atom::Integer(_) => "integer",
            Atom::Real(_) => "real",
            Atom::Boolean(_) => "boolean",
            Atom::String(_) => "string",
            Atom::Uuid(_) => "uuid",
            Atom::NamedUuid(_) => "named-uuid",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Atom::Real(r) => Some(*r),
            Atom::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }
}

// A total order (reals by `total_cmp`) so atoms can be sorted, deduplicated and hashed.
impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}
impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Atom {}
impl Hash for Atom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Atom::Integer(i) => i.hash(state),
            Atom::Real(r) => r.to_bits().hash(state),
            Atom::Boolean(b) => b.hash(state),
            Atom::String(s) | Atom::NamedUuid(s) => s.hash(state),
            Atom::Uuid(u) => u.hash(state),
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Integer(i) => write!(f, "{i}"),
            Atom::Real(r) => write!(f, "{r}"),
            Atom::Boolean(b) => write!(f, "{b}"),
            Atom::String(s) => write!(f, "{s:?}"),
            Atom::Uuid(u) => write!(f, "{u}"),
            Atom::NamedUuid(n) => write!(f, "@{n}"),
        }
    }
}

impl From<i64> for Atom {
    fn from(v: i64) -> Self {
        Atom::Integer(v)
    }
}
impl From<f64> for Atom {
    fn from(v: f64) -> Self {
        Atom::Real(v)
    }
}
impl From<bool> for Atom {
    fn from(v: bool) -> Self {
        Atom::Boolean(v)
    }
}
impl From<&str> for Atom {
    fn from(v: &str) -> Self {
        Atom::String(v.to_owned())
    }
}
impl From<String> for Atom {
    fn from(v: String) -> Self {
        Atom::String(v)
    }
}
impl From<Uuid> for Atom {
    fn from(v: Uuid) -> Self {
        Atom::Uuid(v)
    }
}

/// A column value: a bare atom (a column whose type is exactly one atom), a set or a map.
///
/// Invariant (kept by the constructors and the decoder): set elements are sorted and
/// unique; map entries are sorted by key and keys are unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Atom(Atom),
    Set(Vec<Atom>),
    Map(Vec<(Atom, Atom)>),
}

impl Default for Value {
    fn default() -> Self {
        Value::Set(Vec::new())
    }
}

impl Value {
    /// The empty set, which is also the default of every optional/set/map column.
    pub fn empty() -> Value {
        Value::Set(Vec::new())
    }

    /// A set from any atoms (sorted and deduplicated here).
    pub fn set<I, A>(atoms: I) -> Value
    where
        I: IntoIterator<Item = A>,
        A: Into<Atom>,
    {
        let mut v: Vec<Atom> = atoms.into_iter().map(Into::into).collect();
        v.sort();
        v.dedup();
        Value::Set(v)
    }

    /// A map from any pairs (sorted by key; for a repeated key the last pair wins).
    pub fn map<I, K, V>(pairs: I) -> Value
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Atom>,
        V: Into<Atom>,
    {
        let m: BTreeMap<Atom, Atom> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Value::Map(m.into_iter().collect())
    }

    /// A map of strings, the shape of `external_ids`, `options`, `other_config`.
    pub fn string_map<'a, I>(pairs: I) -> Value
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        Value::map(pairs)
    }

    /// The atom of a scalar value or of a one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Value::Atom(a) => Some(a),
            Value::Set(s) if s.len() == 1 => s.first(),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        self.as_atom().and_then(Atom::as_str)
    }
    pub fn as_i64(&self) -> Option<i64> {
        self.as_atom().and_then(Atom::as_i64)
    }
    pub fn as_bool(&self) -> Option<bool> {
        self.as_atom().and_then(Atom::as_bool)
    }
    pub fn as_uuid(&self) -> Option<Uuid> {
        self.as_atom().and_then(Atom::as_uuid)
    }

    /// Elements of a set (a bare atom counts as a one-element set; a map yields nothing).
    pub fn set_elements(&self) -> &[Atom] {
        match self {
            Value::Atom(a) => std::slice::from_ref(a),
            Value::Set(s) => s,
            Value::Map(_) => &[],
        }
    }

    /// Entries of a map (an empty set counts as an empty map).
    pub fn map_entries(&self) -> &[(Atom, Atom)] {
        match self {
            Value::Map(m) => m,
            _ => &[],
        }
    }

    /// Looks up a map entry by string key (binary search: maps are sorted).
    pub fn map_get(&self, key: &str) -> Option<&Atom> {
        let m = self.map_entries();
        m.binary_search_by(|(k, _)| match k {
            Atom::String(s) => s.as_str().cmp(key),
            other => other.rank().cmp(&3),
        })
        .ok()
        .map(|i| &m[i].1)
    }

    /// A map of strings as a `BTreeMap` (non-string entries are skipped).
    pub fn to_string_map(&self) -> BTreeMap<String, String> {
        self.map_entries()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
            .collect()
    }

    /// Number of atoms (set) or pairs (map); 1 for a bare atom.
    pub fn len(&self) -> usize {
        match self {
            Value::Atom(_) => 1,
            Value::Set(s) => s.len(),
            Value::Map(m) => m.len(),
        }
    }

    /// True for the empty set/map.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-establishes the canonical form (sorted, unique) after building a value by hand.
    pub fn canonicalize(&mut self) {
        match self {
            Value::Atom(_) => {}
            Value::Set(s) => {
                s.sort();
                s.dedup();
            }
            Value::Map(m) => {
                // Servers send maps sorted: then there is nothing to do.
                if m.windows(2).all(|w| w[0].0 < w[1].0) {
                    return;
                }
                // Stable sort keeps insertion order among equal keys; keep the last one.
                m.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out: Vec<(Atom, Atom)> = Vec::with_capacity(m.len());
                for (k, v) in m.drain(..) {
                    match out.last_mut() {
                        Some(last) if last.0 == k => last.1 = v,
                        _ => out.push((k, v)),
                    }
                }
                *m = out;
            }
        }
    }

    /// Applies an `update2` "modify" diff to this value (RFC 7047 extension, ovsdb-server(7)):
    /// for a set, the result is the symmetric difference; for a map, per key of the diff: key
    /// absent → insert, same key with the same value → delete, different value → replace.
    /// A scalar column's diff is simply the new value.
    pub fn apply_diff(&self, diff: &Value) -> Value {
        match (self, diff) {
            (Value::Map(old), Value::Map(d)) => Value::Map(apply_map_diff(old, d)),
            // An empty map is sent as an empty set, so accept any empty "set" on either side.
            (Value::Set(s), Value::Map(d)) if s.is_empty() => Value::Map(apply_map_diff(&[], d)),
            (Value::Map(old), Value::Set(d)) if d.is_empty() => Value::Map(old.clone()),
            (Value::Set(old), Value::Set(d)) => Value::Set(sym_diff(old, d)),
            (Value::Set(old), Value::Atom(a)) => Value::Set(sym_diff(old, std::slice::from_ref(a))),
            (Value::Atom(_), new) => new.clone(),
            (_, new) => new.clone(),
        }
    }
}

fn sym_diff(a: &[Atom], b: &[Atom]) -> Vec<Atom> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            Ordering::Less => {
                out.push(a[i].clone());
                i += 1;
            }
            Ordering::Greater => {
                out.push(b[j].clone());
                j += 1;
            }
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

fn apply_map_diff(old: &[(Atom, Atom)], diff: &[(Atom, Atom)]) -> Vec<(Atom, Atom)> {
    let mut out = Vec::with_capacity(old.len() + diff.len());
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < diff.len() {
        match old[i].0.cmp(&diff[j].0) {
            Ordering::Less => {
                out.push(old[i].clone());
                i += 1;
            }
            Ordering::Greater => {
                out.push(diff[j].clone());
                j += 1;
            }
            Ordering::Equal => {
                if old[i].1 != diff[j].1 {
                    out.push(diff[j].clone());
                }
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&old[i..]);
    out.extend_from_slice(&diff[j..]);
    out
}

impl<T: Into<Atom>> From<T> for Value {
    fn from(v: T) -> Self {
        Value::Atom(v.into())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Atom(a) => write!(f, "{a}"),
            Value::Set(s) => {
                f.write_str("[")?;
                for (i, a) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire form (serde). Serialization writes straight into the output buffer.

impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Atom::Integer(i) => s.serialize_i64(*i),
            Atom::Real(r) => s.serialize_f64(*r),
            Atom::Boolean(b) => s.serialize_bool(*b),
            Atom::String(v) => s.serialize_str(v),
            Atom::Uuid(u) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element("uuid")?;
                t.serialize_element(u.hyphenated().encode_lower(&mut Uuid::encode_buffer()))?;
                t.end()
            }
            Atom::NamedUuid(n) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element("named-uuid")?;
                t.serialize_element(n)?;
                t.end()
            }
        }
    }
}

struct Pair<'a>(&'a Atom, &'a Atom);
impl Serialize for Pair<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(self.0)?;
        t.serialize_element(self.1)?;
        t.end()
    }
}
struct Pairs<'a>(&'a [(Atom, Atom)]);
impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut q = s.serialize_seq(Some(self.0.len()))?;
        for (k, v) in self.0 {
            q.serialize_element(&Pair(k, v))?;
        }
        q.end()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Atom(a) => a.serialize(s),
            Value::Set(v) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element("set")?;
                t.serialize_element(v)?;
                t.end()
            }
            Value::Map(m) => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element("map")?;
                t.serialize_element(&Pairs(m))?;
                t.end()
            }
        }
    }
}

/// What a JSON value decoded to: an atom, or a tagged set/map.
enum Decoded {
    Atom(Atom),
    Set(Vec<Atom>),
    Map(Vec<(Atom, Atom)>),
}

struct DecodedVisitor {
    allow_compound: bool,
}

impl<'de> Visitor<'de> for DecodedVisitor {
    type Value = Decoded;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allow_compound {
            f.write_str("an OVSDB value (atom, [\"uuid\",..], [\"named-uuid\",..], [\"set\",..] or [\"map\",..])")
        } else {
            f.write_str("an OVSDB atom")
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::Boolean(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::Integer(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decoded, E> {
        i64::try_from(v)
            .map(|i| Decoded::Atom(Atom::Integer(i)))
            .map_err(|_| E::custom(format!("integer {v} out of the 64-bit signed range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::Real(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::String(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Decoded, E> {
        Ok(Decoded::Atom(Atom::String(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Decoded, A::Error> {
        let tag: Tag = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("empty array is not an OVSDB value"))?;
        let out = match tag {
            Tag::Uuid => {
                let UuidStr(u) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("[\"uuid\"] without a value"))?;
                Decoded::Atom(Atom::Uuid(u))
            }
            Tag::NamedUuid => {
                let s: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("[\"named-uuid\"] without a name"))?;
                Decoded::Atom(Atom::NamedUuid(s))
            }
            Tag::Set if self.allow_compound => {
                let mut v: Vec<Atom> = seq
                    .next_element_seed(AtomListSeed)?
                    .ok_or_else(|| de::Error::custom("[\"set\"] without elements"))?;
                v.sort();
                v.dedup();
                Decoded::Set(v)
            }
            Tag::Map if self.allow_compound => {
                let m: Vec<(Atom, Atom)> = seq
                    .next_element_seed(PairListSeed)?
                    .ok_or_else(|| de::Error::custom("[\"map\"] without pairs"))?;
                let mut v = Value::Map(m);
                v.canonicalize();
                match v {
                    Value::Map(m) => Decoded::Map(m),
                    _ => Decoded::Map(Vec::new()),
                }
            }
            other => {
                return Err(de::Error::custom(format!(
                    "unknown OVSDB value tag {:?}",
                    other.name()
                )))
            }
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!(
                "trailing elements after [{:?}, ..]",
                tag.name()
            )));
        }
        Ok(out)
    }
}

/// The first element of a tagged array, recognized without allocating.
enum Tag {
    Uuid,
    NamedUuid,
    Set,
    Map,
    /// Unknown (kept for the error message; allocates only then).
    Other(String),
}

impl Tag {
    fn name(&self) -> &str {
        match self {
            Tag::Uuid => "uuid",
            Tag::NamedUuid => "named-uuid",
            Tag::Set => "set",
            Tag::Map => "map",
            Tag::Other(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"uuid\", \"named-uuid\", \"set\" or \"map\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tag, E> {
                Ok(match v {
                    "uuid" => Tag::Uuid,
                    "named-uuid" => Tag::NamedUuid,
                    "set" => Tag::Set,
                    "map" => Tag::Map,
                    other => Tag::Other(other.to_owned()),
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A uuid in its string form, parsed without an intermediate `String`.
struct UuidStr(Uuid);

impl<'de> Deserialize<'de> for UuidStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = UuidStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a uuid string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UuidStr, E> {
                Uuid::try_parse(v)
                    .map(UuidStr)
                    .map_err(|_| E::custom(format!("invalid uuid {v:?}")))
            }
        }
        d.deserialize_str(V)
    }
}

struct AtomListSeed;
impl<'de> DeserializeSeed<'de> for AtomListSeed {
    type Value = Vec<Atom>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Atom>, D::Error> {
        Vec::<Atom>::deserialize(d)
    }
}

struct PairListSeed;
impl<'de> DeserializeSeed<'de> for PairListSeed {
    type Value = Vec<(Atom, Atom)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<(Atom, Atom)>, D::Error> {
        Vec::<(Atom, Atom)>::deserialize(d)
    }
}

impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(DecodedVisitor {
            allow_compound: false,
        })? {
            Decoded::Atom(a) => Ok(a),
            _ => Err(de::Error::custom("expected an atom, found a set or map")),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(
            match d.deserialize_any(DecodedVisitor {
                allow_compound: true,
            })? {
                Decoded::Atom(a) => Value::Atom(a),
                Decoded::Set(s) => Value::Set(s),
                Decoded::Map(m) => Value::Map(m),
            },
        )
    }
}

// ---------------------------------------------------------------------------------------
// Typed conversions used by models (generated code) and by callers.

/// Why a value could not be converted to a Rust type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("expected {expected}, found {found}")]
    Type {
        expected: &'static str,
        found: String,
    },
    #[error("expected at most one element, found {0}")]
    TooMany(usize),
    #[error("expected exactly one element, found none")]
    Missing,
}

fn type_err(expected: &'static str, found: &dyn fmt::Display) -> ValueError {
    let mut s = found.to_string();
    if s.len() > 80 {
        let mut cut = 80;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    ValueError::Type { expected, found: s }
}

/// A Rust type that one OVSDB atom converts to.
pub trait FromAtom: Sized {
    fn from_atom(a: &Atom) -> Result<Self, ValueError>;
}
/// A Rust type that converts to one OVSDB atom.
pub trait ToAtom {
    fn to_atom(&self) -> Atom;
}

impl FromAtom for String {
    fn from_atom(a: &Atom) -> Result<Self, ValueError> {
        a.as_str()
            .map(str::to_owned)
            .ok_or_else(|| type_err("string", a))
    }
}
impl FromAtom for i64 {
    fn from_atom(a: &Atom) -> Result<Self, ValueError> {
        a.as_i64().ok_or_else(|| type_err("integer", a))
    }
}
impl FromAtom for f64 {
    fn from_atom(a: &Atom) -> Result<Self, ValueError> {
        a.as_f64().ok_or_else(|| type_err("real", a))
    }
}
impl FromAtom for bool {
    fn from_atom(a: &Atom) -> Result<Self, ValueError> {
        a.as_bool().ok_or_else(|| type_err("boolean", a))
    }
}
impl FromAtom for Uuid {
    fn from_atom(a: &Atom) -> Result<Self, ValueError> {
        a.as_uuid().ok_or_else(|| type_err("uuid", a))
    }
}
impl FromAtom for Atom {
    fn from_atom(a: &Atom) -> Result<Self, ValueError> {
        Ok(a.clone())
    }
}
impl ToAtom for String {
    fn to_atom(&self) -> Atom {
        Atom::String(self.clone())
    }
}
impl ToAtom for str {
    fn to_atom(&self) -> Atom {
        Atom::String(self.to_owned())
    }
}
impl ToAtom for i64 {
    fn to_atom(&self) -> Atom {
        Atom::Integer(*self)
    }
}
impl ToAtom for f64 {
    fn to_atom(&self) -> Atom {
        Atom::Real(*self)
    }
}
impl ToAtom for bool {
    fn to_atom(&self) -> Atom {
        Atom::Boolean(*self)
    }
}
impl ToAtom for Uuid {
    fn to_atom(&self) -> Atom {
        Atom::Uuid(*self)
    }
}
impl ToAtom for Atom {
    fn to_atom(&self) -> Atom {
        self.clone()
    }
}

/// A Rust type that a whole column value converts to.
///
/// Scalars (`String`, `i64`, `f64`, `bool`, `Uuid`) accept a bare atom or a one-element set;
/// `Option<T>` accepts a set of 0 or 1 elements; `Vec<T>`/`BTreeSet<T>` any set;
/// `BTreeMap<K, V>` a map (or the empty set).
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, ValueError>;
}
/// A Rust type that converts to a whole column value (the inverse of [`FromValue`]).
pub trait ToValue {
    fn to_value(&self) -> Value;
}

macro_rules! scalar_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> Result<Self, ValueError> {
                match v {
                    Value::Atom(a) => <$t>::from_atom(a),
                    Value::Set(s) if s.len() == 1 => <$t>::from_atom(&s[0]),
                    Value::Set(s) if s.is_empty() => Err(ValueError::Missing),
                    other => Err(type_err(stringify!($t), other)),
                }
            }
        }
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Atom(self.to_atom())
            }
        }
    )*};
}
scalar_value!(String, i64, f64, bool, Uuid, Atom);

impl<T: FromAtom> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        match v {
            Value::Atom(a) => T::from_atom(a).map(Some),
            Value::Set(s) => match s.len() {
                0 => Ok(None),
                1 => T::from_atom(&s[0]).map(Some),
                n => Err(ValueError::TooMany(n)),
            },
            Value::Map(_) => Err(type_err("optional atom", v)),
        }
    }
}
impl<T: ToAtom> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(t) => Value::Set(vec![t.to_atom()]),
            None => Value::empty(),
        }
    }
}
impl<T: FromAtom> FromValue for Vec<T> {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        match v {
            Value::Map(m) if !m.is_empty() => Err(type_err("set", v)),
            _ => v.set_elements().iter().map(T::from_atom).collect(),
        }
    }
}
impl<T: ToAtom> ToValue for Vec<T> {
    fn to_value(&self) -> Value {
        Value::set(self.iter().map(ToAtom::to_atom))
    }
}
impl<T: FromAtom + Ord> FromValue for BTreeSet<T> {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        match v {
            Value::Map(m) if !m.is_empty() => Err(type_err("set", v)),
            _ => v.set_elements().iter().map(T::from_atom).collect(),
        }
    }
}
impl<T: ToAtom> ToValue for BTreeSet<T> {
    fn to_value(&self) -> Value {
        // BTreeSet order may differ from atom order (e.g. f64), so re-sort via Value::set.
        Value::set(self.iter().map(ToAtom::to_atom))
    }
}
impl<K: FromAtom + Ord, V: FromAtom> FromValue for BTreeMap<K, V> {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        match v {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| Ok((K::from_atom(k)?, V::from_atom(v)?)))
                .collect(),
            Value::Set(s) if s.is_empty() => Ok(BTreeMap::new()),
            other => Err(type_err("map", other)),
        }
    }
}
impl<K: ToAtom, V: ToAtom> ToValue for BTreeMap<K, V> {
    fn to_value(&self) -> Value {
        Value::map(self.iter().map(|(k, v)| (k.to_atom(), v.to_atom())))
    }
}
impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl FromValue for Value {
    fn from_value(v: &Value) -> Result<Self, ValueError> {
        Ok(v.clone())
    }
}
