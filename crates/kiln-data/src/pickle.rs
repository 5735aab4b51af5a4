//! Python pickles, as far as datasets use them: CIFAR-10's Python batches (written by
//! Python 2's cPickle, `str` keys and NumPy arrays) and the same data pickled again by
//! Python 3 (protocols 0 to 5). This is a reader of data, not of programs: the only calls
//! it carries out are the few that rebuild NumPy arrays and byte strings; any other is an
//! error naming it, so a pickle can never run code here.

use std::collections::HashMap;
use std::path::Path;

use crate::numpy::NumpyArray;
use crate::{DataError, Result};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Python 2's `str` and Python 3's `bytes` and `bytearray`.
    Bytes(Vec<u8>),
    Str(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global {
        module: String,
        name: String,
    },
    /// A NumPy array: empty from `_reconstruct` until its state is set.
    Array(Option<NumpyArray>),
    /// A NumPy dtype: its byte order (`<`, `>`, `|`, `=`) and kind and size (`u1`).
    Dtype {
        order: char,
        kind: String,
    },
}

impl Value {
    /// The value under `key` of a dict, whose keys may be `bytes` (Python 2) or `str`.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(items) = self else { return None };
        items.iter().find_map(|(k, v)| match k {
            Value::Bytes(b) if b == key.as_bytes() => Some(v),
            Value::Str(s) if s == key => Some(v),
            _ => None,
        })
    }

    /// What kind of value this is, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Bytes(_) => "a byte string",
            Value::Str(_) => "a str",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Global { .. } => "a global name",
            Value::Array(_) => "a NumPy array",
            Value::Dtype { .. } => "a NumPy dtype",
        }
    }
}

/// The object a pickle holds. Errors name the byte offset and the opcode there.
pub(crate) fn load(path: &Path, bytes: &[u8]) -> Result<Value> {
    Unpickler { path, bytes, pos: 0, op_at: 0, op: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() }.run()
}

struct Unpickler<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    /// The opcode being carried out and its offset, for errors.
    op_at: usize,
    op: u8,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    /// Python shares memoised objects; here a GET copies, which is the same for the
    /// immutable values (names, dtypes, byte strings) dataset pickles fetch again.
    memo: HashMap<u64, Value>,
}

impl<'a> Unpickler<'a> {
    fn error(&self, what: impl Into<String>) -> DataError {
        DataError::format(self.path, format!("byte {} (pickle opcode 0x{:02x})", self.op_at, self.op), what)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self
                .error(format!("the pickle breaks off: {n} bytes were due, {} remain", self.bytes.len() - self.pos)));
        };
        let taken: &'a [u8] = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn uint(&mut self, size: usize) -> Result<u64> {
        let mut word = [0u8; 8];
        word[..size].copy_from_slice(self.take(size)?);
        Ok(u64::from_le_bytes(word))
    }

    fn length(&mut self, size: usize) -> Result<usize> {
        let n = self.uint(size)?;
        usize::try_from(n).map_err(|_| self.error(format!("length {n} is too large")))
    }

    /// A protocol-0 argument: the bytes up to the next newline.
    fn line_bytes(&mut self) -> Result<&'a [u8]> {
        let rest: &'a [u8] = &self.bytes[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.error("the pickle breaks off inside a line argument"));
        };
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn line(&mut self) -> Result<String> {
        let bytes = self.line_bytes()?.to_vec();
        String::from_utf8(bytes).map_err(|_| self.error("a line argument is not text"))
    }

    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&mark| mark >= self.stack.len()) {
            return Err(self.error("pops past a MARK"));
        }
        self.stack.pop().ok_or_else(|| self.error("pops an empty stack"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| self.error("needs a MARK, and there is none"))?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value> {
        if self.marks.last().is_some_and(|&mark| mark >= self.stack.len()) {
            return Err(self.error("reaches past a MARK"));
        }
        let op_at = self.op_at;
        let (path, op) = (self.path, self.op);
        self.stack.last_mut().ok_or_else(|| {
            DataError::format(
                path,
                format!("byte {op_at} (pickle opcode 0x{op:02x})"),
                "needs a value on an empty stack",
            )
        })
    }

    fn push_memo(&mut self, key: u64) -> Result<()> {
        let value = self.top()?.clone();
        self.memo.insert(key, value);
        Ok(())
    }

    fn get_memo(&mut self, key: u64) -> Result<()> {
        let value =
            self.memo.get(&key).cloned().ok_or_else(|| self.error(format!("memo entry {key} was never stored")))?;
        self.stack.push(value);
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        match self.top()? {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.error(format!("appends to {kind}, not a list")))
            }
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.error("sets an odd number of keys and values"));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            pairs.push((key, value));
        }
        match self.top()? {
            Value::Dict(dict) => {
                dict.extend(pairs);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.error(format!("sets items of {kind}, not a dict")))
            }
        }
    }

    fn text(&self, value: Value, what: &str) -> Result<String> {
        match value {
            Value::Str(s) => Ok(s),
            Value::Bytes(b) => String::from_utf8(b).map_err(|_| self.error(format!("{what} is not text"))),
            other => Err(self.error(format!("{what} is {}, not text", other.kind()))),
        }
    }

    fn run(mut self) -> Result<Value> {
        loop {
            self.op_at = self.pos;
            self.op = *self.take(1)?.first().expect("one byte taken");
            match self.op {
                // PROTO, FRAME: nothing to do but skip their arguments.
                0x80 => drop(self.take(1)?),
                0x95 => drop(self.take(8)?),
                b'.' => {
                    let value = self.pop()?;
                    if !self.stack.is_empty() || !self.marks.is_empty() {
                        return Err(self.error("stops with more than one value left"));
                    }
                    return Ok(value);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => drop(self.pop()?),
                b'1' => drop(self.pop_mark()?),
                b'2' => {
                    let top = self.top()?.clone();
                    self.stack.push(top);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let n = self.uint(1)?;
                    self.stack.push(Value::Int(n as i64));
                }
                b'M' => {
                    let n = self.uint(2)?;
                    self.stack.push(Value::Int(n as i64));
                }
                b'J' => {
                    let n = self.uint(4)? as u32 as i32;
                    self.stack.push(Value::Int(n as i64));
                }
                0x8a | 0x8b => {
                    let size = if self.op == 0x8a { self.length(1)? } else { self.length(4)? };
                    if size > 8 {
                        return Err(self.error(format!("an integer of {size} bytes is too large")));
                    }
                    let unsigned = self.uint(size)?;
                    let unused = 64 - 8 * size as u32;
                    let n = if size == 0 { 0 } else { ((unsigned << unused) as i64) >> unused };
                    self.stack.push(Value::Int(n));
                }
                b'I' => {
                    let line = self.line()?;
                    let value = match line.as_str() {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        digits => {
                            Value::Int(digits.parse().map_err(|_| self.error(format!("{digits:?} is not an int")))?)
                        }
                    };
                    self.stack.push(value);
                }
                b'L' => {
                    let line = self.line()?;
                    let digits = line.trim_end_matches('L');
                    let n = digits.parse().map_err(|_| self.error(format!("{line:?} is not an int of 64 bits")))?;
                    self.stack.push(Value::Int(n));
                }
                b'G' => {
                    let bits = u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(f64::from_bits(bits)));
                }
                b'F' => {
                    let line = self.line()?;
                    let x = line.parse().map_err(|_| self.error(format!("{line:?} is not a float")))?;
                    self.stack.push(Value::Float(x));
                }
                b'U' | b'C' | b'T' | b'B' | 0x8e | 0x96 => {
                    let size = match self.op {
                        b'U' | b'C' => 1,
                        b'T' | b'B' => 4,
                        _ => 8,
                    };
                    let n = self.length(size)?;
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(bytes));
                }
                0x8c | b'X' | 0x8d => {
                    let size = match self.op {
                        0x8c => 1,
                        b'X' => 4,
                        _ => 8,
                    };
                    let n = self.length(size)?;
                    let bytes = self.take(n)?.to_vec();
                    let text = String::from_utf8(bytes).map_err(|_| self.error("a str is not UTF-8"))?;
                    self.stack.push(Value::Str(text));
                }
                b'S' => {
                    let line = self.line()?;
                    let bytes =
                        unquote(&line).ok_or_else(|| self.error(format!("{line:.40} is not a quoted string")))?;
                    self.stack.push(Value::Bytes(bytes));
                }
                b'V' => {
                    let line = self.line_bytes()?;
                    let text = raw_unicode_escape(line).ok_or_else(|| self.error("a str has a bad \\u escape"))?;
                    self.stack.push(Value::Str(text));
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(Vec::new()));
                    self.set_items(items)?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (self.op - 0x84) as usize;
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>>>()?;
                    items.reverse();
                    self.stack.push(Value::Tuple(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let name = self.text(name, "a global's name")?;
                    let module = self.pop()?;
                    let module = self.text(module, "a global's module")?;
                    self.stack.push(Value::Global { module, name });
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let result = self.call(callable, args)?;
                    self.stack.push(result);
                }
                b'b' => {
                    let state = self.pop()?;
                    let object = std::mem::replace(self.top()?, Value::None);
                    let built = self.build(object, state)?;
                    *self.top()? = built;
                }
                b'p' => {
                    let line = self.line()?;
                    let key = line.parse().map_err(|_| self.error(format!("memo key {line:?} is not a number")))?;
                    self.push_memo(key)?;
                }
                b'q' => {
                    let key = self.uint(1)?;
                    self.push_memo(key)?;
                }
                b'r' => {
                    let key = self.uint(4)?;
                    self.push_memo(key)?;
                }
                0x94 => self.push_memo(self.memo.len() as u64)?,
                b'g' => {
                    let line = self.line()?;
                    let key = line.parse().map_err(|_| self.error(format!("memo key {line:?} is not a number")))?;
                    self.get_memo(key)?;
                }
                b'h' => {
                    let key = self.uint(1)?;
                    self.get_memo(key)?;
                }
                b'j' => {
                    let key = self.uint(4)?;
                    self.get_memo(key)?;
                }
                op => return Err(self.error(format!("opcode 0x{op:02x} is not one a data pickle needs"))),
            }
        }
    }

    /// The calls that rebuild arrays and byte strings; any other is refused.
    fn call(&self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global { module, name } = callable else {
            return Err(self.error(format!("calls {}, which is not a global name", callable.kind())));
        };
        let Value::Tuple(mut args) = args else {
            return Err(self.error(format!("calls {module}.{name} with {}, not a tuple", args.kind())));
        };
        let numpy =
            |m: &str| m.strip_prefix("numpy.core.").or_else(|| m.strip_prefix("numpy._core.")).map(str::to_owned);
        match (numpy(&module).as_deref().unwrap_or(&module), name.as_str()) {
            ("multiarray", "_reconstruct") => Ok(Value::Array(None)),
            ("numpy", "dtype") if !args.is_empty() => {
                let kind = self.text(args.swap_remove(0), "a dtype's type")?;
                Ok(Value::Dtype { order: '=', kind })
            }
            ("_codecs", "encode") if !args.is_empty() => match args.swap_remove(0) {
                Value::Str(text) => {
                    latin1(&text).map(Value::Bytes).ok_or_else(|| self.error("encoded text is not Latin-1"))
                }
                other => Err(self.error(format!("encodes {}, not a str", other.kind()))),
            },
            ("builtins" | "__builtin__", "bytearray") => match args.into_iter().next() {
                None => Ok(Value::Bytes(Vec::new())),
                Some(Value::Bytes(bytes)) => Ok(Value::Bytes(bytes)),
                Some(Value::Str(text)) => {
                    latin1(&text).map(Value::Bytes).ok_or_else(|| self.error("bytearray text is not Latin-1"))
                }
                Some(other) => Err(self.error(format!("makes a bytearray of {}", other.kind()))),
            },
            ("numeric", "_frombuffer") if args.len() == 4 => {
                let mut args = args.into_iter();
                let (buffer, dtype, shape, order) =
                    (args.next().unwrap(), args.next().unwrap(), args.next().unwrap(), args.next().unwrap());
                self.array(shape, dtype, order == Value::Str("F".into()), buffer).map(|a| Value::Array(Some(a)))
            }
            _ => Err(self.error(format!("calls {module}.{name}, which a data pickle has no need of"))),
        }
    }

    /// Sets the state of an array (`ndarray.__setstate__`) or a dtype.
    fn build(&self, object: Value, state: Value) -> Result<Value> {
        let Value::Tuple(state) = state else {
            return Err(self.error(format!("sets the state of {} from {}", object.kind(), state.kind())));
        };
        match object {
            Value::Array(None) if state.len() == 5 => {
                let mut state = state.into_iter().skip(1);
                let (shape, dtype, fortran, data) =
                    (state.next().unwrap(), state.next().unwrap(), state.next().unwrap(), state.next().unwrap());
                let fortran = matches!(fortran, Value::Bool(true)) || fortran == Value::Int(1);
                Ok(Value::Array(Some(self.array(shape, dtype, fortran, data)?)))
            }
            Value::Dtype { kind, .. } if state.len() >= 2 => {
                let order = match &state[1] {
                    Value::Str(s) => s.chars().next(),
                    Value::Bytes(b) => b.first().map(|&c| c as char),
                    _ => None,
                };
                let order = order.ok_or_else(|| self.error("a dtype's state has no byte order"))?;
                Ok(Value::Dtype { order, kind })
            }
            other => Err(self.error(format!("sets the state of {} from a tuple of {}", other.kind(), state.len()))),
        }
    }

    fn array(&self, shape: Value, dtype: Value, fortran: bool, data: Value) -> Result<NumpyArray> {
        let Value::Tuple(dims) = shape else { return Err(self.error(format!("an array's shape is {}", shape.kind()))) };
        let shape = dims
            .iter()
            .map(|d| match d {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                other => Err(self.error(format!("an array's shape holds {}", other.kind()))),
            })
            .collect::<Result<Vec<usize>>>()?;
        let Value::Dtype { order, kind } = dtype else {
            return Err(self.error(format!("an array's dtype is {}", dtype.kind())));
        };
        let data = match data {
            Value::Bytes(bytes) => bytes,
            Value::Str(text) => latin1(&text).ok_or_else(|| self.error("an array's data is not Latin-1 text"))?,
            other => {
                return Err(
                    self.error(format!("an array's data is {} (object arrays are not supported)", other.kind()))
                );
            }
        };
        if fortran && shape.len() > 1 {
            return Err(self.error("Fortran-ordered arrays are not supported"));
        }
        // '=' is the writer's native order, little-endian on every machine NumPy's pickles come from.
        let order = if order == '=' { '<' } else { order };
        NumpyArray::new(format!("{order}{kind}"), shape, data).map_err(|why| self.error(why))
    }
}

/// Text whose characters are all below 256, as the bytes Latin-1 encodes it to.
fn latin1(text: &str) -> Option<Vec<u8>> {
    text.chars().map(|c| u8::try_from(c as u32).ok()).collect()
}

/// A protocol-0 str argument, in Python's raw-unicode-escape: Latin-1 bytes, with `\uXXXX`
/// and `\UXXXXXXXX` for other characters (and for backslashes and newlines).
fn raw_unicode_escape(bytes: &[u8]) -> Option<String> {
    let mut text = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            (byte, _) => {
                text.push(byte as char);
                i += 1;
                continue;
            }
        };
        let hex = std::str::from_utf8(bytes.get(i + 2..i + 2 + digits)?).ok()?;
        text.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
        i += 2 + digits;
    }
    Some(text)
}

/// A protocol-0 string argument: Python's repr of a str, in single or double quotes.
fn unquote(line: &str) -> Option<Vec<u8>> {
    let quote = line.chars().next().filter(|&q| q == '\'' || q == '"')?;
    let inner = line.strip_prefix(quote)?.strip_suffix(quote)?.as_bytes();
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] != b'\\' {
            out.push(inner[i]);
            i += 1;
            continue;
        }
        let escape = *inner.get(i + 1)?;
        i += 2;
        out.push(match escape {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'x' => {
                let hex = std::str::from_utf8(inner.get(i..i + 2)?).ok()?;
                i += 2;
                u8::from_str_radix(hex, 16).ok()?
            }
            other => other,
        });
    }
    Some(out)
}
