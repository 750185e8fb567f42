//! BER to DER, just enough for the CMS that IMDS serves.
//!
//! AWS encodes the `rsa2048` signature in BER: indefinite lengths and the signed document as a
//! constructed OCTET STRING of chunks (`30 80 06 09 …`, `24 80 04 82 01 db …`). The `der`
//! crate reads DER only, so this rewrites every length as definite and minimal and joins
//! constructed OCTET STRINGs into one primitive one. Nothing cryptographic depends on the
//! rewrite: the signature is checked over the re-encoded signed attributes (which RFC 5652
//! defines as DER anyway) and the digest over the content octets, which joining preserves.

/// How deeply elements may nest; CMS `SignedData` needs about ten levels.
const MAX_DEPTH: usize = 32;

const TAG_OCTET_STRING: u8 = 0x04;
const CONSTRUCTED: u8 = 0x20;

/// Re-encodes one BER element (the whole of `input`) as DER.
///
/// # Errors
/// A sentence saying what is malformed.
pub(super) fn to_der(input: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = Reader { input, pos: 0 };
    let element = reader.element(0)?;
    if reader.pos != input.len() {
        return Err(format!(
            "{} bytes after the end of the signature",
            input.len() - reader.pos
        ));
    }
    let mut out = Vec::with_capacity(input.len());
    element.encode(&mut out);
    Ok(out)
}

enum Element {
    Primitive { tag: u8, value: Vec<u8> },
    Constructed { tag: u8, children: Vec<Element> },
}

impl Element {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Primitive { tag, value } => {
                out.push(*tag);
                encode_len(value.len(), out);
                out.extend_from_slice(value);
            }
            Self::Constructed { tag, children } => {
                let mut body = Vec::new();
                for child in children {
                    child.encode(&mut body);
                }
                out.push(*tag);
                encode_len(body.len(), out);
                out.extend_from_slice(&body);
            }
        }
    }
}

fn encode_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        // Fits in the short form by the check above.
        out.push(u8::try_from(len).unwrap_or(0));
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let significant = &bytes[skip..];
    // At most size_of::<usize>() bytes, so the count fits in the low 7 bits.
    out.push(0x80 | u8::try_from(significant.len()).unwrap_or(0));
    out.extend_from_slice(significant);
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.input.get(self.pos).ok_or("truncated element")?;
        self.pos += 1;
        Ok(b)
    }

    /// `None` for the indefinite form.
    fn length(&mut self) -> Result<Option<usize>, String> {
        let first = self.byte()?;
        if first < 0x80 {
            return Ok(Some(usize::from(first)));
        }
        if first == 0x80 {
            return Ok(None);
        }
        let count = usize::from(first & 0x7f);
        if count > 4 {
            return Err(format!("a {count}-byte length is larger than any signature"));
        }
        let mut len = 0usize;
        for _ in 0..count {
            len = (len << 8) | usize::from(self.byte()?);
        }
        Ok(Some(len))
    }

    fn element(&mut self, depth: usize) -> Result<Element, String> {
        if depth > MAX_DEPTH {
            return Err(format!("elements nested deeper than {MAX_DEPTH} levels"));
        }
        let tag = self.byte()?;
        if tag & 0x1f == 0x1f {
            return Err(format!("multi-byte tag {tag:#04x} is not used by CMS"));
        }
        let length = self.length()?;
        if tag & CONSTRUCTED == 0 {
            let len = length.ok_or("indefinite length on a primitive element")?;
            let end = self.end_of(len)?;
            let value = self.input[self.pos..end].to_vec();
            self.pos = end;
            return Ok(Element::Primitive { tag, value });
        }
        let mut children = Vec::new();
        if let Some(len) = length {
            let end = self.end_of(len)?;
            while self.pos < end {
                children.push(self.element(depth + 1)?);
            }
            if self.pos != end {
                return Err("an element overruns its parent".into());
            }
        } else {
            while self.input.get(self.pos..self.pos + 2) != Some(&[0, 0]) {
                children.push(self.element(depth + 1)?);
            }
            self.pos += 2;
        }
        if tag == TAG_OCTET_STRING | CONSTRUCTED {
            // DER has no constructed strings: join the chunks.
            let mut value = Vec::new();
            join_octets(&children, &mut value)?;
            return Ok(Element::Primitive {
                tag: TAG_OCTET_STRING,
                value,
            });
        }
        if tag & 0xc0 == 0 && tag != 0x30 && tag != 0x31 {
            return Err(format!("constructed universal tag {tag:#04x} is not supported"));
        }
        Ok(Element::Constructed { tag, children })
    }

    fn end_of(&self, len: usize) -> Result<usize, String> {
        self.pos
            .checked_add(len)
            .filter(|end| *end <= self.input.len())
            .ok_or_else(|| format!("a length of {len} runs past the end of the signature"))
    }
}

fn join_octets(children: &[Element], out: &mut Vec<u8>) -> Result<(), String> {
    for child in children {
        match child {
            Element::Primitive {
                tag: TAG_OCTET_STRING,
                value,
            } => out.extend_from_slice(value),
            _ => return Err("a constructed OCTET STRING holds something other than OCTET STRINGs".into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::to_der;

    #[test]
    fn indefinite_lengths_and_chunked_octets_become_der() {
        // SEQUENCE (indefinite) { OCTET STRING (constructed, indefinite) { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0, 0,
        ];
        assert_eq!(
            to_der(&ber).expect("valid BER"),
            [0x30, 0x05, 0x04, 0x03, b'a', b'b', b'c']
        );
    }

    #[test]
    fn non_minimal_lengths_are_shortened_and_der_is_unchanged() {
        assert_eq!(to_der(&[0x04, 0x81, 0x01, 7]).expect("valid BER"), [0x04, 0x01, 7]);
        let long = [&[0x04, 0x81, 0x80][..], &[9; 0x80]].concat();
        assert_eq!(to_der(&long).expect("valid DER"), long);
    }

    #[test]
    fn malformed_input_is_refused() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x80],
            &[0x04, 0x80, 0, 0],
            &[0x04, 0x05, 1],
            &[0x30, 0x00, 0x00],
            &[0x1f, 0x01, 0x00],
            &[0x24, 0x03, 0x02, 0x01, 0x00],
        ] {
            assert!(to_der(bad).is_err(), "{bad:02x?} accepted");
        }
        let deep: Vec<u8> = std::iter::repeat_n([0x30, 0x80], 40).flatten().collect();
        assert!(to_der(&deep).is_err());
    }
}
