//! A pickle reader that never runs code: it interprets the opcodes of Python's pickle format
//! (protocols 0-5, as Lib/pickletools.py documents them) into plain values. A class reference
//! stays a name (`Global`), and "calling" it (REDUCE, NEWOBJ, BUILD) only records the call, so a
//! malicious checkpoint cannot do anything but fail to parse. PyTorch checkpoints are pickles of
//! dicts whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
//! calls with storages as persistent ids; torch_file.rs reads those records.
//!
//! Any byte sequence gives a value or an error, never a panic: every read is bounds-checked and
//! every length is checked against the bytes that remain before anything is allocated.

use std::collections::HashMap;
use std::rc::Rc;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (little-endian two's complement bytes); only ever compared.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Rc<Value>>),
    List(Vec<Rc<Value>>),
    Dict(Vec<(Rc<Value>, Rc<Value>)>),
    Global {
        module: String,
        name: String,
    },
    /// `callable(*args)` as recorded, never executed (REDUCE, NEWOBJ, INST, OBJ).
    Call {
        callable: Rc<Value>,
        args: Rc<Value>,
    },
    /// `obj.__setstate__(state)` as recorded (BUILD on anything but a dict).
    Build {
        obj: Rc<Value>,
        state: Rc<Value>,
    },
    PersistentId(Rc<Value>),
    /// The stack marker of MARK; never part of a finished value.
    Mark,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    pub fn as_tuple(&self) -> Option<&[Rc<Value>]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&[(Rc<Value>, Rc<Value>)]> {
        match self {
            Value::Dict(v) => Some(v),
            _ => None,
        }
    }
    /// The value of string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&Rc<Value>> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
    pub fn is_global(&self, module: &str, name: &str) -> bool {
        matches!(self, Value::Global { module: m, name: n } if m == module && n == name)
    }
}

/// Parses one pickle from the start of `bytes`; returns the value and the bytes consumed.
pub(crate) fn parse(bytes: &[u8]) -> Result<(Rc<Value>, usize), String> {
    let mut m = Machine {
        r: Reader { bytes, pos: 0 },
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    let value = m.run()?;
    Ok((value, m.r.pos))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "pickle ends early (wanted {n} bytes at offset {})",
                    self.pos
                )
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn le<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn len_u32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.le()?) as usize)
    }
    fn len_u64(&mut self) -> Result<usize, String> {
        usize::try_from(u64::from_le_bytes(self.le()?))
            .map_err(|_| "pickle length too large".to_string())
    }
    /// A text line without its `\n` (protocol 0 arguments).
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.bytes[self.pos.min(self.bytes.len())..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle ends inside a text line")?;
        let line = self.take(n + 1)?;
        std::str::from_utf8(&line[..n]).map_err(|_| "pickle text line is not UTF-8".to_string())
    }
    fn utf8(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| "pickle string is not UTF-8".to_string())
    }
}

struct Machine<'a> {
    r: Reader<'a>,
    stack: Vec<Rc<Value>>,
    memo: HashMap<u64, Rc<Value>>,
}

impl Machine<'_> {
    fn pop(&mut self) -> Result<Rc<Value>, String> {
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn push(&mut self, v: Value) {
        self.stack.push(Rc::new(v));
    }
    fn pop_mark(&mut self) -> Result<Vec<Rc<Value>>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|v| **v == Value::Mark)
            .ok_or("pickle MARK not found")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top_mut(&mut self) -> Result<&mut Value, String> {
        let top = self.stack.last_mut().ok_or("pickle stack underflow")?;
        Ok(Rc::make_mut(top))
    }
    fn memo_get(&self, id: u64) -> Result<Rc<Value>, String> {
        self.memo
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("pickle memo {id} missing"))
    }
    fn memo_put(&mut self, id: u64) -> Result<(), String> {
        let top = self.stack.last().ok_or("pickle stack underflow")?.clone();
        self.memo.insert(id, top);
        Ok(())
    }
    fn set_items(&mut self, items: Vec<Rc<Value>>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("pickle SETITEMS with an odd item count".into());
        }
        let Value::Dict(d) = self.top_mut()? else {
            return Err("pickle SETITEMS on a non-dict".into());
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }
    fn append(&mut self, items: Vec<Rc<Value>>) -> Result<(), String> {
        match self.top_mut()? {
            Value::List(l) | Value::Tuple(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err("pickle APPEND on a non-list".into()),
        }
    }
    /// REDUCE / NEWOBJ: only ever recorded. `collections.OrderedDict()` becomes an empty dict so
    /// that the SETITEMS that follow fill it (state dicts are OrderedDicts).
    fn call(&mut self, callable: Rc<Value>, args: Rc<Value>) {
        if callable.is_global("collections", "OrderedDict") {
            self.push(Value::Dict(Vec::new()));
        } else {
            self.push(Value::Call { callable, args });
        }
    }

    fn run(&mut self) -> Result<Rc<Value>, String> {
        loop {
            let op = self.r.u8()?;
            match op {
                0x80 => {
                    self.r.u8()?; // PROTO
                }
                0x95 => {
                    self.r.take(8)?; // FRAME: a size hint only
                }
                b'.' => return self.pop(),
                b'(' => self.push(Value::Mark),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.stack.last().ok_or("pickle stack underflow")?.clone();
                    self.stack.push(top);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.r.le()?) as i64;
                    self.push(Value::Int(v))
                }
                b'K' => {
                    let v = self.r.u8()? as i64;
                    self.push(Value::Int(v))
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.r.le()?) as i64;
                    self.push(Value::Int(v))
                }
                0x8a => {
                    let n = self.r.u8()? as usize;
                    let v = long(self.r.take(n)?);
                    self.push(v);
                }
                0x8b => {
                    let n = self.r.len_u32()?;
                    let v = long(self.r.take(n)?);
                    self.push(v);
                }
                b'I' => {
                    let line = self.r.line()?;
                    let v = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => {
                            Value::Int(s.trim().parse().map_err(|_| "pickle INT is not a number")?)
                        }
                    };
                    self.push(v);
                }
                b'L' => {
                    let line = self.r.line()?;
                    let digits = line.trim_end_matches('L');
                    let v = digits
                        .parse()
                        .map(Value::Int)
                        .unwrap_or_else(|_| Value::BigInt(digits.as_bytes().to_vec()));
                    self.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.r.le()?);
                    self.push(Value::Float(v))
                }
                b'F' => {
                    let line = self.r.line()?;
                    let f = line
                        .trim()
                        .parse()
                        .map_err(|_| "pickle FLOAT is not a number")?;
                    self.push(Value::Float(f));
                }
                b'X' => {
                    let n = self.r.len_u32()?;
                    let s = self.r.utf8(n)?;
                    self.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.r.u8()? as usize;
                    let s = self.r.utf8(n)?;
                    self.push(Value::Str(s));
                }
                0x8d => {
                    let n = self.r.len_u64()?;
                    let s = self.r.utf8(n)?;
                    self.push(Value::Str(s));
                }
                b'T' | b'B' => {
                    let n = self.r.len_u32()?;
                    let b = self.r.take(n)?.to_vec();
                    self.push(bytes_or_str(op, b));
                }
                b'U' | b'C' => {
                    let n = self.r.u8()? as usize;
                    let b = self.r.take(n)?.to_vec();
                    self.push(bytes_or_str(op, b));
                }
                0x8e | 0x96 => {
                    let n = self.r.len_u64()?;
                    let b = self.r.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b'S' => {
                    let line = self.r.line()?;
                    let s = line.trim().trim_matches(|c| c == '\'' || c == '"');
                    self.push(Value::Str(s.to_string()));
                }
                b'V' => {
                    let line = self.r.line()?;
                    self.push(Value::Str(line.to_string()));
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("pickle stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(items));
                }
                b']' | 0x8f => self.push(Value::List(Vec::new())),
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => self.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new()));
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'c' => {
                    let module = self.r.line()?.to_string();
                    let name = self.r.line()?.to_string();
                    self.push(Value::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => self.push(Value::Global {
                            module: m.to_string(),
                            name: n.to_string(),
                        }),
                        _ => return Err("pickle STACK_GLOBAL without strings".into()),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.call(callable, args);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.call(callable, args);
                }
                b'i' => {
                    let module = self.r.line()?.to_string();
                    let name = self.r.line()?.to_string();
                    let args = self.pop_mark()?;
                    let callable = Rc::new(Value::Global { module, name });
                    self.call(callable, Rc::new(Value::Tuple(args)));
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err("pickle OBJ without a class".into());
                    }
                    let callable = items.remove(0);
                    self.call(callable, Rc::new(Value::Tuple(items)));
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    if matches!(*obj, Value::Dict(_)) {
                        // Attributes of a dict subclass (OrderedDict's `_metadata`): not items.
                        self.stack.push(obj);
                    } else {
                        self.push(Value::Build { obj, state });
                    }
                }
                b'p' => {
                    let id = self.r.line()?.trim().parse().map_err(|_| "pickle PUT id")?;
                    self.memo_put(id)?;
                }
                b'q' => {
                    let id = self.r.u8()? as u64;
                    self.memo_put(id)?;
                }
                b'r' => {
                    let id = u32::from_le_bytes(self.r.le()?) as u64;
                    self.memo_put(id)?;
                }
                0x94 => {
                    let id = self.memo.len() as u64;
                    self.memo_put(id)?;
                }
                b'g' => {
                    let id = self.r.line()?.trim().parse().map_err(|_| "pickle GET id")?;
                    let v = self.memo_get(id)?;
                    self.stack.push(v);
                }
                b'h' => {
                    let id = self.r.u8()? as u64;
                    let v = self.memo_get(id)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let id = u32::from_le_bytes(self.r.le()?) as u64;
                    let v = self.memo_get(id)?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let id = self.pop()?;
                    self.push(Value::PersistentId(id));
                }
                b'P' => {
                    let id = self.r.line()?.to_string();
                    self.push(Value::PersistentId(Rc::new(Value::Str(id))));
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at offset {}",
                        self.r.pos - 1
                    ))
                }
            }
        }
    }
}

/// Protocol-2 BINSTRING/SHORT_BINSTRING are Python 2 `str`: text when it decodes.
fn bytes_or_str(op: u8, b: Vec<u8>) -> Value {
    if op == b'T' || op == b'U' {
        match String::from_utf8(b) {
            Ok(s) => Value::Str(s),
            Err(e) => Value::Bytes(e.into_bytes()),
        }
    } else {
        Value::Bytes(b)
    }
}

/// LONG1/LONG4 payload: little-endian two's complement of any width.
fn long(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() > 8 {
        return Value::BigInt(bytes.to_vec());
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_protocol2_dict_with_a_memoised_global() {
        // pickle.dumps({"a": 1, "b": (2, "x")}, protocol=2), hand-assembled.
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02K\x02X\x01\x00\x00\x00xq\x03\x86q\x04u.";
        let (v, used) = parse(bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(v.get("a").and_then(|x| x.as_int()), Some(1));
        let b = v.get("b").unwrap().as_tuple().unwrap();
        assert_eq!(b[1].as_str(), Some("x"));
    }

    #[test]
    fn long1_wider_than_64_bits_is_kept_not_panicking() {
        // torch's legacy magic number 0x1950a86a20f9469cfc6c as LONG1 with 10 bytes.
        let bytes = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.";
        let (v, _) = parse(bytes).unwrap();
        assert!(matches!(*v, Value::BigInt(ref b) if b.len() == 10));
        let (v, _) = parse(b"\x8a\x02\xff\xff.").unwrap();
        assert_eq!(v.as_int(), Some(-1));
    }

    #[test]
    fn every_prefix_of_a_pickle_is_an_error_not_a_panic() {
        let bytes = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02K\x02X\x01\x00\x00\x00xq\x03\x86q\x04u.";
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "prefix {n} parsed");
        }
    }
}
