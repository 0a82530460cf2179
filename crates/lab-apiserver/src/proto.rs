//! Just enough of Kubernetes' protobuf encoding to read what kubectl's typed generators send
//! (`kubectl create namespace|configmap|serviceaccount` POST `application/vnd.kubernetes.protobuf`
//! and accept a JSON answer). Other kinds in protobuf get 415.
//!
//! Wire format: the magic `k8s\0`, then a `runtime.Unknown` message (1: TypeMeta{1: apiVersion,
//! 2: kind}, 2: raw object bytes). Every object has ObjectMeta at field 1.

use crate::error::{ApiError, ApiResult};
use base64::Engine;
use serde_json::{json, Map, Value};

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, i: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i)?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// The next (field number, value); None at the end; Err on malformed input.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ()> {
        if self.i >= self.b.len() {
            return Ok(None);
        }
        let key = self.varint().ok_or(())?;
        let field = match key & 7 {
            0 => Field::Varint(self.varint().ok_or(())?),
            1 => {
                self.i = self
                    .i
                    .checked_add(8)
                    .filter(|i| *i <= self.b.len())
                    .ok_or(())?;
                Field::Other
            }
            2 => {
                let len = usize::try_from(self.varint().ok_or(())?).map_err(|_| ())?;
                let end = self
                    .i
                    .checked_add(len)
                    .filter(|e| *e <= self.b.len())
                    .ok_or(())?;
                let s = &self.b[self.i..end];
                self.i = end;
                Field::Bytes(s)
            }
            5 => {
                self.i = self
                    .i
                    .checked_add(4)
                    .filter(|i| *i <= self.b.len())
                    .ok_or(())?;
                Field::Other
            }
            _ => return Err(()),
        };
        Ok(Some((key >> 3, field)))
    }
}

fn bad() -> ApiError {
    ApiError::bad_request("malformed protobuf body")
}

fn string(b: &[u8]) -> ApiResult<String> {
    String::from_utf8(b.to_vec()).map_err(|_| bad())
}

/// Reads a map entry message {1: key, 2: value}.
fn entry(b: &[u8]) -> ApiResult<(String, Vec<u8>)> {
    let mut r = Reader::new(b);
    let (mut k, mut v) = (String::new(), Vec::new());
    while let Some((n, f)) = r.next().map_err(|_| bad())? {
        match (n, f) {
            (1, Field::Bytes(s)) => k = string(s)?,
            (2, Field::Bytes(s)) => v = s.to_vec(),
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> ApiResult<Value> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    let mut r = Reader::new(b);
    while let Some((n, f)) = r.next().map_err(|_| bad())? {
        let Field::Bytes(s) = f else { continue };
        match n {
            1 => {
                m.insert("name".into(), json!(string(s)?));
            }
            2 => {
                m.insert("generateName".into(), json!(string(s)?));
            }
            3 => {
                m.insert("namespace".into(), json!(string(s)?));
            }
            11 | 12 => {
                let (k, v) = entry(s)?;
                let target = if n == 11 {
                    &mut labels
                } else {
                    &mut annotations
                };
                target.insert(k, json!(string(&v)?));
            }
            14 => finalizers.push(json!(string(s)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

/// Decodes a protobuf body of one of the supported kinds into its JSON form.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| ApiError::bad_request("protobuf body without the k8s envelope"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let mut r = Reader::new(rest);
    while let Some((n, f)) = r.next().map_err(|_| bad())? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((n, f)) = t.next().map_err(|_| bad())? {
                    match (n, f) {
                        (1, Field::Bytes(s)) => api_version = string(s)?,
                        (2, Field::Bytes(s)) => kind = string(s)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(s)) => raw = s,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    let supported = matches!(
        (api_version.as_str(), kind.as_str()),
        ("v1", "Namespace" | "ConfigMap" | "ServiceAccount")
    );
    if !supported {
        return Err(ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf ({api_version} {kind}: only Namespace, ConfigMap \
             and ServiceAccount are read as protobuf; send JSON or YAML)"
        )));
    }
    let mut data = Map::new();
    let mut binary = Map::new();
    let mut r = Reader::new(raw);
    while let Some((n, f)) = r.next().map_err(|_| bad())? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(s)) => {
                obj.insert("metadata".into(), object_meta(s)?);
            }
            ("ConfigMap", 2, Field::Bytes(s)) => {
                let (k, v) = entry(s)?;
                data.insert(k, json!(string(&v)?));
            }
            ("ConfigMap", 3, Field::Bytes(s)) => {
                let (k, v) = entry(s)?;
                let b64 = base64::engine::general_purpose::STANDARD.encode(v);
                binary.insert(k, json!(b64));
            }
            ("ConfigMap", 4, Field::Varint(v)) => {
                obj.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary));
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(field << 3) | 2, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn configmap_from_protobuf() {
        let meta = [
            ld(1, b"cm1"),
            ld(11, &[ld(1, b"app"), ld(2, b"web")].concat()),
        ]
        .concat();
        let raw = [ld(1, &meta), ld(2, &[ld(1, b"a"), ld(2, b"b")].concat())].concat();
        let tm = [ld(1, b"v1"), ld(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), ld(1, &tm), ld(2, &raw)].concat();
        assert_eq!(
            decode(&body),
            Ok(json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "cm1", "labels": {"app": "web"}},
                      "data": {"a": "b"}}))
        );
        assert_eq!(
            decode(&body[..body.len() - 3]).map_err(|e| e.code),
            Err(400)
        );
        let pod = [
            b"k8s\0".to_vec(),
            ld(1, &[ld(1, b"v1"), ld(2, b"Pod")].concat()),
        ]
        .concat();
        assert_eq!(decode(&pod).map_err(|e| e.code), Err(415));
        assert_eq!(decode(b"nope").map_err(|e| e.code), Err(400));
    }
}
