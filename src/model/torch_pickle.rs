//! State dicts saved by `torch.save` (`pytorch_model.bin`), read without running anything from
//! the file. A pickle is a small stack program: this evaluates the opcodes such files use and
//! knows only the callables a state dict needs (`OrderedDict`, PyTorch's tensor rebuild
//! functions, its storage types). Any other class or function is refused by name, so a
//! hostile file can do nothing but fail to load.
//!
//! Two layouts (torch/serialization.py):
//! - zip (PyTorch ≥ 1.6): the member `<archive>/data.pkl` holds the dict, and storage `k`'s
//!   bytes are the member `<archive>/data/k`;
//! - legacy: five pickles in a row (magic number, protocol version, system information, the
//!   dict, the storage keys in order), then each storage as an 8-byte element count followed
//!   by its elements.

use std::collections::HashMap;
use std::ops::Range;

use safetensors::Dtype;

use super::weights::Stored;
use super::zip;

/// `torch.save`'s legacy magic number and protocol version.
const LEGACY_MAGIC: i128 = 0x1950_a86a_20f9_469c_fc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// The tensors of the state dict saved in `file`, by name, in the file's order.
pub fn state_dict(file: &[u8]) -> Result<Vec<(String, Stored)>, String> {
    if zip::is_zip(file) {
        zip_state_dict(file)
    } else {
        legacy_state_dict(file)
    }
}

fn zip_state_dict(file: &[u8]) -> Result<Vec<(String, Stored)>, String> {
    let members = zip::stored_members(file)?;
    let (pickle_name, pickle) = members
        .iter()
        .find(|(name, _)| name.ends_with("/data.pkl") && name.matches('/').count() == 1)
        .ok_or("a zip archive without <name>/data.pkl: not a torch.save file")?;
    let prefix = pickle_name.trim_end_matches("data.pkl");
    if let Some(order) = members.get(&format!("{prefix}byteorder")) {
        if &file[order.clone()] != b"little" {
            return Err("saved on a big-endian machine; only little-endian files are read".into());
        }
    }
    let mut vm = Unpickler::new(&file[pickle.clone()]);
    let dict = vm.load()?;
    let storages: HashMap<String, Range<usize>> = vm
        .storages
        .keys()
        .map(|key| {
            let member = format!("{prefix}data/{key}");
            members
                .get(&member)
                .map(|range| (key.clone(), range.clone()))
                .ok_or_else(|| format!("storage {key} has no member {member}"))
        })
        .collect::<Result<_, _>>()?;
    locate(dict, &storages)
}

fn legacy_state_dict(file: &[u8]) -> Result<Vec<(String, Stored)>, String> {
    let mut vm = Unpickler::new(file);
    match vm.load()? {
        Value::Int(LEGACY_MAGIC) => {}
        _ => return Err("neither a zip archive nor torch.save's legacy format".into()),
    }
    match vm.load()? {
        Value::Int(LEGACY_PROTOCOL) => {}
        other => return Err(format!("legacy format protocol {other:?}, expected 1001")),
    }
    if let Value::Dict(info) = vm.load()? {
        let little = info
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == "little_endian"))
            .map(|(_, v)| v);
        if matches!(little, Some(Value::Bool(false))) {
            return Err("saved on a big-endian machine; only little-endian files are read".into());
        }
    }
    let dict = vm.load()?;
    let Value::List(keys) = vm.load()? else {
        return Err("the legacy format's storage key list is missing".into());
    };
    // The storages follow the pickles, in the order of the key list.
    let mut at = vm.at;
    let mut storages = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err(format!("storage key {key:?} is not a string"));
        };
        let dtype = vm
            .storages
            .get(&key)
            .ok_or_else(|| format!("storage {key} is listed but no tensor uses it"))?;
        let count = file
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .ok_or_else(|| format!("the file ends before storage {key}"))?;
        let len = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(element_size(*dtype)))
            .filter(|&len| len <= file.len().saturating_sub(at + 8))
            .ok_or_else(|| {
                format!("storage {key} ({count} elements) runs past the end of the file")
            })?;
        storages.insert(key, at + 8..at + 8 + len);
        at += 8 + len;
    }
    locate(dict, &storages)
}

/// The dict's tensors placed in the file, each checked to lie inside its storage.
fn locate(
    dict: Value,
    storages: &HashMap<String, Range<usize>>,
) -> Result<Vec<(String, Stored)>, String> {
    let Value::Dict(items) = dict else {
        return Err(format!("holds {}, not a state dict", dict.kind()));
    };
    items
        .into_iter()
        .map(|(name, value)| {
            let Value::Str(name) = name else {
                return Err(format!("a state dict key is {}, not a name", name.kind()));
            };
            let Value::Tensor(t) = value else {
                return Err(format!(
                    "{name} holds {}, not a tensor: not a state dict (a training checkpoint? \
                     save model.state_dict())",
                    value.kind()
                ));
            };
            let storage = storages
                .get(&t.storage)
                .ok_or_else(|| format!("{name}: its storage {} is not in the file", t.storage))?;
            let size = element_size(t.dtype);
            // The last element's index; an empty tensor addresses nothing.
            let last = t
                .shape
                .iter()
                .zip(&t.strides)
                .try_fold(t.offset, |acc, (&n, &s)| {
                    acc.checked_add(n.checked_sub(1)?.checked_mul(s)?)
                });
            // Checked to the end: a last index of usize::MAX wrapped to 0 and let a tensor that
            // lies past its storage pass (found by fuzzing).
            let end = last.and_then(|last| last.checked_add(1)?.checked_mul(size));
            let fits = match (last, end) {
                (None, _) => t.shape.contains(&0),
                (Some(_), end) => end.is_some_and(|end| end <= storage.len()),
            };
            if !fits {
                return Err(format!(
                    "{name}: shape {:?} at offset {} runs past its storage of {} bytes",
                    t.shape,
                    t.offset,
                    storage.len()
                ));
            }
            // An empty tensor reads nothing: its offset is not checked, so not used.
            let offset = if last.is_some() { t.offset * size } else { 0 };
            let tensor = Stored {
                dtype: t.dtype,
                shape: t.shape,
                strides: t.strides,
                start: storage.start + offset,
            };
            Ok((name, tensor))
        })
        .collect()
}

/// Bytes per element: every storage type is a whole number of bytes.
fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize() / 8
}

// ---- the pickle machine ----

const PROTO: u8 = 0x80;

/// A tensor as the pickle describes it: a view of a storage.
#[derive(Debug, Clone)]
struct TensorView {
    storage: String,
    dtype: Dtype,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A class or function, by module and name (never called: see `call`).
    Global(String, String),
    Storage(String, Dtype),
    Tensor(TensorView),
}

impl Value {
    fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) => "an int".into(),
            Value::Float(v) => format!("the float {v}"),
            Value::Str(_) => "a string".into(),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(m, n) => format!("{m}.{n}"),
            Value::Storage(..) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
        }
    }

    fn index(&self) -> Result<usize, String> {
        match self {
            Value::Int(v) => usize::try_from(*v).map_err(|_| format!("{v} is not a size")),
            other => Err(format!("expected a size, found {}", other.kind())),
        }
    }

    fn sizes(&self) -> Result<Vec<usize>, String> {
        match self {
            Value::Tuple(items) | Value::List(items) => items.iter().map(Value::index).collect(),
            other => Err(format!("expected a tuple of sizes, found {}", other.kind())),
        }
    }
}

/// PyTorch's storage classes and the dtypes they hold.
fn storage_dtype(name: &str) -> Option<Dtype> {
    Some(match name {
        "FloatStorage" => Dtype::F32,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "DoubleStorage" => Dtype::F64,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" | "UntypedStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        _ => return None,
    })
}

struct Unpickler<'a> {
    data: &'a [u8],
    /// Where the next opcode is read.
    at: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
    /// Every storage the pickles referenced: key → dtype.
    storages: HashMap<String, Dtype>,
    budget: Budget,
}

/// Values nested deeper than this are refused: a state dict nests about five deep, and
/// dropping a value recurses (150,000 nested tuples overflowed the stack; found by fuzzing).
const MAX_DEPTH: usize = 100;

/// What the values a pickle builds may cost, in bytes of memory: every value pushed, copied
/// (DUP, the memo) or stored is paid for with its size and that of every value inside it, so
/// nothing grows without bound. Found by fuzzing: forty DUP-then-TUPLE2 steps, 82 bytes,
/// would build 2⁴⁰ values, and a 4 KiB string copied a million times took 4 GB. The budget
/// is fixed, not a share of the file: a legacy file's pickle runs on into its tensor data,
/// and a zip's may be padded. A state dict pays about 6.5 KB a tensor (the LXMERT fixture's
/// 185: 1.2 MB), so this admits some 40,000 tensors.
const BUDGET_BYTES: usize = 256 << 20;

struct Budget {
    left: usize,
}

impl Budget {
    fn new() -> Self {
        Self { left: BUDGET_BYTES }
    }

    /// Pays for `v` and every value inside it; refuses it when it nests too deep.
    fn charge(&mut self, v: &Value) -> Result<(), String> {
        self.visit(v, 1)
    }

    fn visit(&mut self, v: &Value, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "values nested more than {MAX_DEPTH} deep: not a state dict"
            ));
        }
        let heap = match v {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Global(module, name) => module.len() + name.len(),
            Value::Storage(key, _) => key.len(),
            Value::Tensor(t) => t.storage.len() + 8 * (t.shape.len() + t.strides.len()),
            _ => 0,
        };
        self.left = self
            .left
            .checked_sub(std::mem::size_of::<Value>() + heap)
            .ok_or(
                "the pickle builds values of more than 256 MiB, where a state dict's take a \
                 few MB (a corrupt or hostile file)",
            )?;
        match v {
            Value::Tuple(items) | Value::List(items) => items
                .iter()
                .try_for_each(|item| self.visit(item, depth + 1)),
            Value::Dict(items) => items.iter().try_for_each(|(k, item)| {
                self.visit(k, depth + 1)?;
                self.visit(item, depth + 1)
            }),
            _ => Ok(()),
        }
    }
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: HashMap::new(),
            budget: Budget::new(),
        }
    }

    /// Runs one pickle, from `at` to its STOP, and returns its value.
    fn load(&mut self) -> Result<Value, String> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        loop {
            let at = self.at;
            let op = self.byte()?;
            match self.step(op) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(format!("pickle opcode 0x{op:02x} at byte {at}: {e}")),
            }
        }
        self.pop()
    }

    /// Executes opcode `op`; true at STOP.
    fn step(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'.' => return Ok(true),
            PROTO => {
                self.take(1)?;
            }
            0x95 => {
                self.take(8)?; // FRAME: a length hint
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.stack.last().ok_or("stack underflow")?;
                self.budget.charge(top)?;
                self.stack.push(top.clone());
            }
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Value::Int(v as i128))?;
            }
            b'K' => {
                let v = self.byte()?;
                self.push(Value::Int(v as i128))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Value::Int(v as i128))?;
            }
            0x8a => {
                let n = self.byte()? as usize;
                let v = self.long(n)?;
                self.push(Value::Int(v))?;
            }
            0x8b => {
                let n = self.length4()?;
                let v = self.long(n)?;
                self.push(Value::Int(v))?;
            }
            b'I' | b'L' => {
                let line = self.line()?;
                let text = line.trim_end_matches('L');
                let v = match text {
                    "01" if op == b'I' => Value::Bool(true),
                    "00" if op == b'I' => Value::Bool(false),
                    _ => Value::Int(text.parse().map_err(|_| format!("bad integer {line:?}"))?),
                };
                self.push(v)?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(v))?;
            }
            b'X' => {
                let n = self.length4()?;
                let s = self.text(n)?;
                self.push(Value::Str(s))?;
            }
            0x8c | b'U' => {
                let n = self.byte()? as usize;
                let s = self.text(n)?;
                self.push(Value::Str(s))?;
            }
            0x8d => {
                let n = usize::try_from(u64::from_le_bytes(self.array()?))
                    .map_err(|e| e.to_string())?;
                let s = self.text(n)?;
                self.push(Value::Str(s))?;
            }
            b'T' => {
                let n = self.length4()?;
                let s = self.text(n)?;
                self.push(Value::Str(s))?;
            }
            b'C' => {
                let n = self.byte()? as usize;
                let b = self.take(n)?.to_vec();
                self.push(Value::Bytes(b))?;
            }
            b'B' => {
                let n = self.length4()?;
                let b = self.take(n)?.to_vec();
                self.push(Value::Bytes(b))?;
            }
            b')' => self.push(Value::Tuple(Vec::new()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                // The items must lie above the last mark, as `pop` keeps every pop.
                let floor = self.marks.last().copied().unwrap_or(0);
                let from = self
                    .stack
                    .len()
                    .checked_sub(n)
                    .filter(|&from| from >= floor)
                    .ok_or("stack underflow")?;
                let items = self.stack.split_off(from);
                self.push(Value::Tuple(items))?;
            }
            b']' => self.push(Value::List(Vec::new()))?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(items))?;
            }
            // A value that joins a container in place is paid for again: its nesting grows.
            b'a' => {
                let v = self.pop()?;
                self.budget.charge(&v)?;
                self.list()?.push(v);
            }
            b'e' => {
                let items = self.pop_mark()?;
                items.iter().try_for_each(|v| self.budget.charge(v))?;
                self.list()?.extend(items);
            }
            b'}' => self.push(Value::Dict(Vec::new()))?,
            b'd' => {
                let items = pairs(self.pop_mark()?)?;
                self.push(Value::Dict(items))?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.budget.charge(&k)?;
                self.budget.charge(&v)?;
                self.dict()?.push((k, v));
            }
            b'u' => {
                let items = self.pop_mark()?;
                items.iter().try_for_each(|v| self.budget.charge(v))?;
                let items = pairs(items)?;
                self.dict()?.extend(items);
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Value::Global(module, name))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n))?,
                    _ => return Err("STACK_GLOBAL without two strings".into()),
                }
            }
            b'q' => {
                let i = self.byte()? as usize;
                self.put(i)?;
            }
            b'r' => {
                let i = self.length4()?;
                self.put(i)?;
            }
            0x94 => {
                let i = self.memo.len();
                self.put(i)?;
            }
            b'p' => {
                let i = self.line()?.parse().map_err(|_| "bad memo index")?;
                self.put(i)?;
            }
            b'h' => {
                let i = self.byte()? as usize;
                self.get(i)?;
            }
            b'j' => {
                let i = self.length4()?;
                self.get(i)?;
            }
            b'g' => {
                let i = self.line()?.parse().map_err(|_| "bad memo index")?;
                self.get(i)?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.storage(pid)?;
                self.push(storage)?;
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let Value::Tuple(args) = args else {
                    return Err(format!("call with {} for arguments", args.kind()));
                };
                let v = call(callable, args)?;
                self.push(v)?;
            }
            b'b' => {
                // An object's state: OrderedDict's `_metadata` (module versions), a
                // Parameter's flags. Nothing that changes the values.
                self.pop()?;
                match self.top()? {
                    Value::Dict(_) | Value::Tensor(_) => {}
                    other => return Err(format!("cannot set the state of {}", other.kind())),
                }
            }
            _ => return Err("not an opcode of the pickles torch.save writes".into()),
        }
        Ok(false)
    }

    /// `('storage', torch.XStorage, key, location, numel[, view])` → the storage.
    fn storage(&mut self, pid: Value) -> Result<Value, String> {
        let Value::Tuple(parts) = pid else {
            return Err(format!("persistent id is {}", pid.kind()));
        };
        match parts.as_slice() {
            [Value::Str(tag), Value::Global(_, class), Value::Str(key), _, _, rest @ ..]
                if tag == "storage" && rest.iter().all(|v| matches!(v, Value::None)) =>
            {
                let dtype =
                    storage_dtype(class).ok_or_else(|| format!("unknown storage type {class}"))?;
                self.storages.insert(key.clone(), dtype);
                Ok(Value::Storage(key.clone(), dtype))
            }
            _ => Err(format!("unsupported persistent id {parts:?}")),
        }
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let bytes = self
            .at
            .checked_add(n)
            .and_then(|end| self.data.get(self.at..end))
            .ok_or("the pickle ends early (truncated file?)")?;
        self.at += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn length4(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    /// A little-endian two's-complement integer of n bytes (LONG1, LONG4).
    fn long(&mut self, n: usize) -> Result<i128, String> {
        if n > 16 {
            return Err(format!("a {n}-byte integer"));
        }
        let bytes = self.take(n)?;
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buf = [if negative { 0xff } else { 0 }; 16];
        buf[..n].copy_from_slice(bytes);
        Ok(i128::from_le_bytes(buf))
    }

    fn text(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string that is not UTF-8".into())
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the pickle ends early (truncated file?)")?;
        let line = self.text(end)?;
        self.at += 1;
        Ok(line)
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.marks.last() == Some(&self.stack.len()) {
            return Err("stack underflow (at a mark)".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("no mark")?;
        if mark > self.stack.len() {
            return Err("stack underflow (below a mark)".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn list(&mut self) -> Result<&mut Vec<Value>, String> {
        match self.top()? {
            Value::List(items) => Ok(items),
            other => Err(format!("append to {}", other.kind())),
        }
    }

    fn dict(&mut self) -> Result<&mut Vec<(Value, Value)>, String> {
        match self.top()? {
            Value::Dict(items) => Ok(items),
            other => Err(format!("set an item of {}", other.kind())),
        }
    }

    /// Pushes a value built from the stack's values, charging for it.
    fn push(&mut self, v: Value) -> Result<(), String> {
        self.budget.charge(&v)?;
        self.stack.push(v);
        Ok(())
    }

    // The memo holds copies: a state dict never changes a container after storing it.
    fn put(&mut self, i: usize) -> Result<(), String> {
        let v = self.stack.last().ok_or("stack underflow")?;
        self.budget.charge(v)?;
        self.memo.insert(i, v.clone());
        Ok(())
    }

    fn get(&mut self, i: usize) -> Result<(), String> {
        let v = self.memo.get(&i).ok_or(format!("memo {i} is empty"))?;
        self.budget.charge(v)?;
        self.stack.push(v.clone());
        Ok(())
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("an odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// The only calls a state dict makes; everything else is refused, never run.
fn call(callable: Value, args: Vec<Value>) -> Result<Value, String> {
    let Value::Global(module, name) = callable else {
        return Err(format!("call of {}", callable.kind()));
    };
    match (module.as_str(), name.as_str(), args.as_slice()) {
        ("collections", "OrderedDict", []) => Ok(Value::Dict(Vec::new())),
        (
            "torch._utils",
            "_rebuild_tensor_v2" | "_rebuild_tensor",
            [Value::Storage(key, dtype), offset, shape, strides, ..],
        ) => {
            let (shape, strides) = (shape.sizes()?, strides.sizes()?);
            if shape.len() != strides.len() {
                return Err(format!("shape {shape:?} with strides {strides:?}"));
            }
            Ok(Value::Tensor(TensorView {
                storage: key.clone(),
                dtype: *dtype,
                offset: offset.index()?,
                shape,
                strides,
            }))
        }
        (
            "torch._utils",
            "_rebuild_parameter" | "_rebuild_parameter_with_state",
            [tensor @ Value::Tensor(_), ..],
        ) => Ok(tensor.clone()),
        ("torch._tensor", "_rebuild_from_type_v2", [func, _, Value::Tuple(inner), ..]) => {
            call(func.clone(), inner.clone())
        }
        _ => {
            // A whole pickled model names its own classes.
            let model_class = ["transformers.", "torch.nn.", "__main__"]
                .iter()
                .any(|p| module.starts_with(p));
            let hint = if model_class {
                "; a whole model was saved: save its state_dict(), or use save_pretrained"
            } else {
                ""
            };
            Err(format!(
                "the file calls {module}.{name}, which a state dict does not need; refused \
                 (nothing from the file is run){hint}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any single corrupted byte (three flips at each) of either layout gives an error or
    /// tensors that lie inside the file, never a panic.
    #[test]
    fn a_corrupted_byte_anywhere_is_caught() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch-pickles");
        for file in ["tensors.bin", "tensors.zip.bin"] {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            for at in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = bytes.clone();
                    bad[at] ^= flip;
                    for (name, t) in state_dict(&bad).unwrap_or_default() {
                        let size = element_size(t.dtype);
                        let last = t
                            .shape
                            .iter()
                            .zip(&t.strides)
                            .map(|(&n, &s)| n.saturating_sub(1) * s)
                            .sum::<usize>();
                        let empty = t.shape.contains(&0);
                        assert!(
                            empty || t.start + (last + 1) * size <= bad.len(),
                            "{file} byte {at}: {name}"
                        );
                    }
                }
            }
        }
    }

    /// TUPLE3 over a mark (found by fuzzing: it took items from below the mark, and the
    /// POP_MARK after it split the stack past its end).
    #[test]
    fn a_tuple_cannot_take_items_below_a_mark() {
        let mut vm = Unpickler::new(b"\x80\x02NN(N\x871.");
        let e = vm.load().unwrap_err();
        assert_eq!(e, "pickle opcode 0x87 at byte 6: stack underflow");
    }

    /// Nesting, whether built on the stack or in place, stops at MAX_DEPTH (found by fuzzing:
    /// 150,000 nested tuples overflowed the stack when dropped).
    #[test]
    fn deep_nesting_is_refused() {
        let tuples = [&b"\x80\x02)"[..], &[0x85; 150_000], b"."].concat();
        let lists = [vec![b']'; 150_000], vec![b'a'; 149_999], b".".to_vec()].concat();
        for pickle in [tuples, lists] {
            let e = Unpickler::new(&pickle).load().unwrap_err();
            assert!(e.contains("nested more than 100 deep"), "{e}");
        }
        // At the limit it still loads.
        let tuples = [&b")"[..], &[0x85; MAX_DEPTH - 1], b"."].concat();
        assert!(matches!(
            Unpickler::new(&tuples).load(),
            Ok(Value::Tuple(_))
        ));
    }

    /// Copies are paid for by their size, from a budget the file's length does not raise
    /// (found by fuzzing, each out of memory): forty DUP-then-TUPLE2 steps or memo copies
    /// (2⁴⁰ values), the same followed by 2 MiB of padding (the budget grew with the file), and
    /// a 4 KiB string copied a thousand times into a tuple, DUP'd 1,100 times (4.5 GB).
    #[test]
    fn copies_run_out_of_budget() {
        let dup = [&b")"[..], &b"2\x86".repeat(40), b"."].concat();
        let memo = [&b")"[..], &b"q\x00h\x00\x86".repeat(40), b"."].concat();
        let padded = [&dup[..], &vec![0; 2 << 20]].concat();
        let string = [
            &b"X\x00\x10\x00\x00"[..],
            &[b'a'; 4096],
            b"q\x00(",
            &b"h\x00".repeat(1000),
            b"t",
            &[b'2'; 1100],
            b".",
        ]
        .concat();
        for pickle in [dup, memo, padded, string] {
            let e = Unpickler::new(&pickle).load().unwrap_err();
            assert!(e.contains("values of more than 256 MiB"), "{e}");
        }
    }

    #[test]
    fn negative_and_long_integers() {
        // LONG1 of 10 bytes (the legacy magic number), then BININT -2.
        let mut vm =
            Unpickler::new(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.J\xfe\xff\xff\xff.");
        assert!(matches!(vm.load(), Ok(Value::Int(LEGACY_MAGIC))));
        assert!(matches!(vm.load(), Ok(Value::Int(-2))));
    }
}
