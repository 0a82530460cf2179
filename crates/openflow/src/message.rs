//! OpenFlow 1.3 messages: the header, HELLO with version bitmaps, ERROR, ECHO, FLOW_MOD,
//! BARRIER and aggregate flow statistics. Pure: bytes in, values out, and back.

use crate::action::{port, Instruction};
use crate::oxm::Match;
use crate::wire::{patch_len, put_u16, put_u32, put_u64, Reader};
use crate::{DecodeError, EncodeError, SwitchError};

/// The protocol version this crate speaks.
pub const OFP_VERSION_1_3: u8 = 0x04;
/// Size of `ofp_header`.
pub const HEADER_LEN: usize = 8;

mod typ {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const FLOW_MOD: u8 = 14;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
}
const OFPHET_VERSIONBITMAP: u16 = 1;
const OFPMP_AGGREGATE: u16 = 2;
/// "All tables" (delete requests, statistics).
pub const OFPTT_ALL: u8 = 0xff;
const OFPG_ANY: u32 = 0xffff_ffff;
const OFP_NO_BUFFER: u32 = 0xffff_ffff;

/// `ofp_flow_mod_command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowModCommand {
    Add,
    Modify,
    ModifyStrict,
    Delete,
    DeleteStrict,
}

impl FlowModCommand {
    fn code(self) -> u8 {
        match self {
            FlowModCommand::Add => 0,
            FlowModCommand::Modify => 1,
            FlowModCommand::ModifyStrict => 2,
            FlowModCommand::Delete => 3,
            FlowModCommand::DeleteStrict => 4,
        }
    }
    fn from_code(c: u8) -> Result<Self, DecodeError> {
        Ok(match c {
            0 => FlowModCommand::Add,
            1 => FlowModCommand::Modify,
            2 => FlowModCommand::ModifyStrict,
            3 => FlowModCommand::Delete,
            4 => FlowModCommand::DeleteStrict,
            c => return Err(DecodeError::Invalid(format!("flow_mod command {c}"))),
        })
    }
}

/// A flow entry as the caller thinks of it: where it goes, what it matches, what it does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    pub matches: Match,
    pub instructions: Vec<Instruction>,
}

impl Flow {
    /// A flow whose instructions are "apply these actions".
    pub fn new(
        table: u8,
        priority: u16,
        cookie: u64,
        matches: Match,
        actions: Vec<crate::Action>,
    ) -> Self {
        Flow {
            table,
            priority,
            cookie,
            matches,
            instructions: vec![Instruction::ApplyActions(actions)],
        }
    }
}

/// `OFPT_FLOW_MOD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowMod {
    pub cookie: u64,
    pub cookie_mask: u64,
    pub table_id: u8,
    pub command: FlowModCommand,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub buffer_id: u32,
    pub out_port: u32,
    pub out_group: u32,
    pub flags: u16,
    pub matches: Match,
    pub instructions: Vec<Instruction>,
}

impl FlowMod {
    fn base(command: FlowModCommand) -> Self {
        FlowMod {
            cookie: 0,
            cookie_mask: 0,
            table_id: 0,
            command,
            idle_timeout: 0,
            hard_timeout: 0,
            priority: 0x8000,
            buffer_id: OFP_NO_BUFFER,
            out_port: port::ANY,
            out_group: OFPG_ANY,
            flags: 0,
            matches: Match::default(),
            instructions: Vec::new(),
        }
    }

    /// Adds the flow, replacing one with the same table, priority and match (its cookie
    /// and actions included).
    pub fn add(flow: &Flow) -> Self {
        FlowMod {
            cookie: flow.cookie,
            table_id: flow.table,
            priority: flow.priority,
            matches: flow.matches.clone(),
            instructions: flow.instructions.clone(),
            ..Self::base(FlowModCommand::Add)
        }
    }

    /// Deletes exactly the flow with this table, priority and match.
    pub fn delete_strict(flow: &Flow) -> Self {
        FlowMod {
            table_id: flow.table,
            priority: flow.priority,
            matches: flow.matches.clone(),
            ..Self::base(FlowModCommand::DeleteStrict)
        }
    }

    /// Deletes every flow, in every table, whose cookie matches `cookie` under `mask`.
    pub fn delete_by_cookie(cookie: u64, mask: u64) -> Self {
        FlowMod {
            cookie,
            cookie_mask: mask,
            table_id: OFPTT_ALL,
            ..Self::base(FlowModCommand::Delete)
        }
    }

    fn encode_body(&self, b: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u64(b, self.cookie);
        put_u64(b, self.cookie_mask);
        b.push(self.table_id);
        b.push(self.command.code());
        put_u16(b, self.idle_timeout);
        put_u16(b, self.hard_timeout);
        put_u16(b, self.priority);
        put_u32(b, self.buffer_id);
        put_u32(b, self.out_port);
        put_u32(b, self.out_group);
        put_u16(b, self.flags);
        put_u16(b, 0);
        self.matches.encode(b)?;
        for i in &self.instructions {
            i.encode(b)?;
        }
        Ok(())
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<FlowMod, DecodeError> {
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let table_id = r.u8()?;
        let command = FlowModCommand::from_code(r.u8()?)?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        let buffer_id = r.u32()?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        let flags = r.u16()?;
        r.skip(2)?;
        let matches = Match::decode(r)?;
        let instructions = Instruction::decode_list(Reader::new(r.rest(), "instructions"))?;
        Ok(FlowMod {
            cookie,
            cookie_mask,
            table_id,
            command,
            idle_timeout,
            hard_timeout,
            priority,
            buffer_id,
            out_port,
            out_group,
            flags,
            matches,
            instructions,
        })
    }
}

/// Body of an `OFPMP_AGGREGATE` request: which flows to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateRequest {
    pub table_id: u8,
    pub out_port: u32,
    pub out_group: u32,
    pub cookie: u64,
    pub cookie_mask: u64,
    pub matches: Match,
}

impl AggregateRequest {
    /// Flows of every table whose cookie matches `cookie` under `mask`.
    pub fn by_cookie(cookie: u64, mask: u64) -> Self {
        AggregateRequest {
            table_id: OFPTT_ALL,
            out_port: port::ANY,
            out_group: OFPG_ANY,
            cookie,
            cookie_mask: mask,
            matches: Match::default(),
        }
    }
}

/// `ofp_aggregate_stats_reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AggregateStats {
    pub packet_count: u64,
    pub byte_count: u64,
    pub flow_count: u32,
}

/// An `OFPT_ERROR` as received. [`ErrorMsg::error`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    pub typ: u16,
    pub code: u16,
    /// Set for `OFPET_EXPERIMENTER` (type 0xffff): the experimenter id.
    pub experimenter: Option<u32>,
    /// Usually the start of the offending request.
    pub data: Vec<u8>,
}

impl ErrorMsg {
    pub fn error(&self) -> SwitchError {
        SwitchError::from_wire(self.typ, self.code, self.experimenter)
    }
}

/// The messages this crate sends and understands. Anything else decodes as `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `versions`: the version bitmap element, if the peer sent one.
    Hello {
        versions: Option<u32>,
    },
    Error(ErrorMsg),
    EchoRequest(Vec<u8>),
    EchoReply(Vec<u8>),
    FlowMod(FlowMod),
    BarrierRequest,
    BarrierReply,
    AggregateRequest(AggregateRequest),
    AggregateReply(AggregateStats),
    Other {
        typ: u8,
        body: Vec<u8>,
    },
}

/// The header fields of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub typ: u8,
    pub length: u16,
    pub xid: u32,
}

impl Header {
    /// Parses the 8-byte header; `length` is checked to cover at least the header.
    pub fn parse(buf: &[u8]) -> Result<Header, DecodeError> {
        let mut r = Reader::new(buf, "ofp_header");
        let h = Header {
            version: r.u8()?,
            typ: r.u8()?,
            length: r.u16()?,
            xid: r.u32()?,
        };
        if usize::from(h.length) < HEADER_LEN {
            return Err(DecodeError::BadLength {
                what: "ofp_header",
                len: usize::from(h.length),
            });
        }
        Ok(h)
    }
}

impl Message {
    /// The whole message, header included, with OpenFlow 1.3 as version.
    pub fn encode(&self, xid: u32) -> Result<Vec<u8>, EncodeError> {
        let mut b = Vec::with_capacity(64);
        b.push(OFP_VERSION_1_3);
        b.push(self.type_code());
        put_u16(&mut b, 0);
        put_u32(&mut b, xid);
        match self {
            Message::Hello { versions } => {
                if let Some(bits) = versions {
                    put_u16(&mut b, OFPHET_VERSIONBITMAP);
                    put_u16(&mut b, 8);
                    put_u32(&mut b, *bits);
                }
            }
            Message::Error(e) => {
                put_u16(&mut b, e.typ);
                put_u16(&mut b, e.code);
                if let Some(x) = e.experimenter {
                    put_u32(&mut b, x);
                }
                b.extend_from_slice(&e.data);
            }
            Message::EchoRequest(d) | Message::EchoReply(d) => b.extend_from_slice(d),
            Message::FlowMod(fm) => fm.encode_body(&mut b)?,
            Message::BarrierRequest | Message::BarrierReply => {}
            Message::AggregateRequest(a) => {
                put_u16(&mut b, OFPMP_AGGREGATE);
                put_u16(&mut b, 0); // flags
                put_u32(&mut b, 0); // pad
                b.push(a.table_id);
                b.extend_from_slice(&[0; 3]);
                put_u32(&mut b, a.out_port);
                put_u32(&mut b, a.out_group);
                put_u32(&mut b, 0);
                put_u64(&mut b, a.cookie);
                put_u64(&mut b, a.cookie_mask);
                a.matches.encode(&mut b)?;
            }
            Message::AggregateReply(s) => {
                put_u16(&mut b, OFPMP_AGGREGATE);
                put_u16(&mut b, 0);
                put_u32(&mut b, 0);
                put_u64(&mut b, s.packet_count);
                put_u64(&mut b, s.byte_count);
                put_u32(&mut b, s.flow_count);
                put_u32(&mut b, 0);
            }
            Message::Other { body, .. } => b.extend_from_slice(body),
        }
        patch_len(&mut b, 2, 0)?;
        Ok(b)
    }

    fn type_code(&self) -> u8 {
        match self {
            Message::Hello { .. } => typ::HELLO,
            Message::Error(_) => typ::ERROR,
            Message::EchoRequest(_) => typ::ECHO_REQUEST,
            Message::EchoReply(_) => typ::ECHO_REPLY,
            Message::FlowMod(_) => typ::FLOW_MOD,
            Message::BarrierRequest => typ::BARRIER_REQUEST,
            Message::BarrierReply => typ::BARRIER_REPLY,
            Message::AggregateRequest(_) => typ::MULTIPART_REQUEST,
            Message::AggregateReply(_) => typ::MULTIPART_REPLY,
            Message::Other { typ, .. } => *typ,
        }
    }

    /// Decodes one complete message (exactly `header.length` bytes). HELLO is decoded
    /// in any version (it carries the negotiation); other messages must be OpenFlow 1.3.
    pub fn decode(buf: &[u8]) -> Result<(Header, Message), DecodeError> {
        let h = Header::parse(buf)?;
        if buf.len() != usize::from(h.length) {
            return Err(DecodeError::BadLength {
                what: "message",
                len: buf.len(),
            });
        }
        let mut r = Reader::new(&buf[HEADER_LEN..], "message body");
        if h.typ == typ::HELLO {
            return Ok((h, decode_hello(&mut r)?));
        }
        if h.version != OFP_VERSION_1_3 {
            return Err(DecodeError::Version(h.version));
        }
        let m = match h.typ {
            typ::ERROR => {
                let t = r.u16()?;
                let code = r.u16()?;
                let experimenter = if t == 0xffff { Some(r.u32()?) } else { None };
                Message::Error(ErrorMsg {
                    typ: t,
                    code,
                    experimenter,
                    data: r.rest().to_vec(),
                })
            }
            typ::ECHO_REQUEST => Message::EchoRequest(r.rest().to_vec()),
            typ::ECHO_REPLY => Message::EchoReply(r.rest().to_vec()),
            typ::FLOW_MOD => Message::FlowMod(FlowMod::decode_body(&mut r)?),
            typ::BARRIER_REQUEST => Message::BarrierRequest,
            typ::BARRIER_REPLY => Message::BarrierReply,
            typ::MULTIPART_REQUEST | typ::MULTIPART_REPLY if r.remaining() >= 8 => {
                let mp = r.u16()?;
                let _flags = r.u16()?;
                r.skip(4)?;
                match (h.typ, mp) {
                    (typ::MULTIPART_REPLY, OFPMP_AGGREGATE) => {
                        let s = AggregateStats {
                            packet_count: r.u64()?,
                            byte_count: r.u64()?,
                            flow_count: r.u32()?,
                        };
                        r.skip(4)?;
                        Message::AggregateReply(s)
                    }
                    (typ::MULTIPART_REQUEST, OFPMP_AGGREGATE) => {
                        let table_id = r.u8()?;
                        r.skip(3)?;
                        let out_port = r.u32()?;
                        let out_group = r.u32()?;
                        r.skip(4)?;
                        let cookie = r.u64()?;
                        let cookie_mask = r.u64()?;
                        let matches = Match::decode(&mut r)?;
                        Message::AggregateRequest(AggregateRequest {
                            table_id,
                            out_port,
                            out_group,
                            cookie,
                            cookie_mask,
                            matches,
                        })
                    }
                    _ => Message::Other {
                        typ: h.typ,
                        body: buf[HEADER_LEN..].to_vec(),
                    },
                }
            }
            t => Message::Other {
                typ: t,
                body: r.rest().to_vec(),
            },
        };
        Ok((h, m))
    }
}

fn decode_hello(r: &mut Reader<'_>) -> Result<Message, DecodeError> {
    let mut versions = None;
    // Hello elements: type, length (incl. the 4-byte element header), padded to 8.
    while r.remaining() >= 4 {
        let t = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 4 {
            return Err(DecodeError::BadLength {
                what: "hello element",
                len,
            });
        }
        let mut e = r.sub(len - 4, "hello element")?;
        if t == OFPHET_VERSIONBITMAP && e.remaining() >= 4 {
            versions = Some(e.u32()?);
        }
        let pad = (8 - len % 8) % 8;
        r.skip(pad.min(r.remaining()))?;
    }
    Ok(Message::Hello { versions })
}

/// The version to use after HELLOs: 1.3 if both sides support it.
pub fn negotiate(peer_version: u8, peer_bitmap: Option<u32>) -> bool {
    match peer_bitmap {
        Some(bits) => bits & (1 << OFP_VERSION_1_3) != 0,
        None => peer_version >= OFP_VERSION_1_3,
    }
}
