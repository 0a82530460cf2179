//! Instructions and actions: output, set_field (ct_mark), goto_table, and the Nicira
//! `resubmit` and `ct` (NXAST_CT) extensions.

use crate::oxm::{field, oxm_u32, OFPXMC_NXM_1};
use crate::wire::{pad8, patch_len, put_u16, put_u32, Reader};
use crate::{DecodeError, EncodeError};

/// Reserved port numbers (OpenFlow 1.3, 32-bit).
pub mod port {
    pub const IN_PORT: u32 = 0xffff_fff8;
    pub const NORMAL: u32 = 0xffff_fffa;
    pub const FLOOD: u32 = 0xffff_fffb;
    pub const CONTROLLER: u32 = 0xffff_fffd;
    /// The bridge's own (internal) port: the host stack.
    pub const LOCAL: u32 = 0xffff_fffe;
    pub const ANY: u32 = 0xffff_ffff;
}

/// The Nicira vendor id of the NXAST_* actions.
pub const NX_VENDOR_ID: u32 = 0x0000_2320;
const NXAST_RESUBMIT_TABLE: u16 = 14;
const NXAST_CT: u16 = 35;
const NX_CT_F_COMMIT: u16 = 1;
const NX_CT_RECIRC_NONE: u8 = 0xff;
/// OFPP_IN_PORT in OpenFlow 1.0's 16-bit numbering (what NXAST_RESUBMIT carries).
const OFPP10_IN_PORT: u16 = 0xfff8;

const OFPAT_OUTPUT: u16 = 0;
const OFPAT_SET_FIELD: u16 = 25;
const OFPAT_EXPERIMENTER: u16 = 0xffff;
const OFPIT_GOTO_TABLE: u16 = 1;
const OFPIT_APPLY_ACTIONS: u16 = 4;
/// Bytes to send to the controller with `output:CONTROLLER` (no buffering).
const OFPCML_NO_BUFFER: u16 = 0xffff;

/// A field to write with `set_field` (only what ovnk needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetField {
    /// `set_field:<v>->ct_mark` (inside `ct(commit, exec(...))`).
    CtMark(u32),
}

/// The Nicira conntrack action (`ct(...)` in ovs-ofctl).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ct {
    pub commit: bool,
    /// Immediate conntrack zone.
    pub zone: u16,
    /// Recirculate into this table after conntrack (`table=`).
    pub table: Option<u8>,
    /// `exec(...)`: actions applied to the connection entry (set_field ct_mark).
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Output to a port number or a reserved port ([`port::LOCAL`], [`port::NORMAL`]...).
    Output(u32),
    SetField(SetField),
    Ct(Ct),
    /// `resubmit(,table)`: continue in another table, then come back.
    Resubmit {
        table: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instruction {
    ApplyActions(Vec<Action>),
    GotoTable(u8),
}

impl Action {
    pub(crate) fn encode(&self, b: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = b.len();
        match self {
            Action::Output(p) => {
                put_u16(b, OFPAT_OUTPUT);
                put_u16(b, 16);
                put_u32(b, *p);
                put_u16(
                    b,
                    if *p == port::CONTROLLER {
                        OFPCML_NO_BUFFER
                    } else {
                        0
                    },
                );
                b.extend_from_slice(&[0; 6]);
            }
            Action::SetField(SetField::CtMark(v)) => {
                put_u16(b, OFPAT_SET_FIELD);
                put_u16(b, 0);
                oxm_u32(b, OFPXMC_NXM_1, field::NX_CT_MARK, *v);
                pad8(b, start);
                patch_len(b, start + 2, start)?;
            }
            Action::Resubmit { table } => {
                nx_header(b, NXAST_RESUBMIT_TABLE);
                put_u16(b, OFPP10_IN_PORT);
                b.push(*table);
                b.extend_from_slice(&[0; 3]);
                patch_len(b, start + 2, start)?;
            }
            Action::Ct(ct) => {
                nx_header(b, NXAST_CT);
                put_u16(b, if ct.commit { NX_CT_F_COMMIT } else { 0 });
                put_u32(b, 0); // zone_src: none, the zone is immediate
                put_u16(b, ct.zone);
                b.push(ct.table.unwrap_or(NX_CT_RECIRC_NONE));
                b.extend_from_slice(&[0; 3]);
                put_u16(b, 0); // alg
                for a in &ct.actions {
                    a.encode(b)?;
                }
                patch_len(b, start + 2, start)?;
            }
        }
        Ok(())
    }

    pub(crate) fn decode_list(mut r: Reader<'_>) -> Result<Vec<Action>, DecodeError> {
        let mut out = Vec::new();
        while !r.is_empty() {
            let typ = r.u16()?;
            let len = usize::from(r.u16()?);
            if len < 8 || len % 8 != 0 {
                return Err(DecodeError::BadLength {
                    what: "action",
                    len,
                });
            }
            let mut a = r.sub(len - 4, "action")?;
            out.push(match typ {
                OFPAT_OUTPUT => {
                    let p = a.u32()?;
                    a.skip(8)?;
                    Action::Output(p)
                }
                OFPAT_SET_FIELD => {
                    let class = a.u16()?;
                    let fh = a.u8()?;
                    let flen = a.u8()?;
                    if (class, fh, flen) != (OFPXMC_NXM_1, field::NX_CT_MARK << 1, 4) {
                        return Err(DecodeError::Unsupported(format!(
                            "set_field of class {class:#06x} field {}",
                            fh >> 1
                        )));
                    }
                    let v = a.u32()?;
                    Action::SetField(SetField::CtMark(v))
                }
                OFPAT_EXPERIMENTER => {
                    let vendor = a.u32()?;
                    let sub = a.u16()?;
                    match (vendor, sub) {
                        (NX_VENDOR_ID, NXAST_RESUBMIT_TABLE) => {
                            let _in_port = a.u16()?;
                            let table = a.u8()?;
                            a.skip(3)?;
                            Action::Resubmit { table }
                        }
                        (NX_VENDOR_ID, NXAST_CT) => {
                            let flags = a.u16()?;
                            let zone_src = a.u32()?;
                            let zone = a.u16()?;
                            let table = a.u8()?;
                            a.skip(3)?;
                            let alg = a.u16()?;
                            if zone_src != 0 || alg != 0 || flags & !NX_CT_F_COMMIT != 0 {
                                return Err(DecodeError::Unsupported(format!(
                                    "ct with flags {flags:#x}, zone_src {zone_src:#x}, alg {alg}"
                                )));
                            }
                            let actions = Action::decode_list(Reader::new(a.rest(), "ct actions"))?;
                            Action::Ct(Ct {
                                commit: flags & NX_CT_F_COMMIT != 0,
                                zone,
                                table: (table != NX_CT_RECIRC_NONE).then_some(table),
                                actions,
                            })
                        }
                        _ => {
                            return Err(DecodeError::Unsupported(format!(
                                "experimenter action {vendor:#x}/{sub}"
                            )))
                        }
                    }
                }
                t => return Err(DecodeError::Unsupported(format!("action type {t}"))),
            });
            // Anything left in an action we understood is padding; it must be zero-length
            // beyond the alignment we already skipped.
            let _ = a.rest();
        }
        Ok(out)
    }
}

fn nx_header(b: &mut Vec<u8>, subtype: u16) {
    put_u16(b, OFPAT_EXPERIMENTER);
    put_u16(b, 0); // patched by the caller
    put_u32(b, NX_VENDOR_ID);
    put_u16(b, subtype);
}

impl Instruction {
    pub(crate) fn encode(&self, b: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = b.len();
        match self {
            Instruction::GotoTable(t) => {
                put_u16(b, OFPIT_GOTO_TABLE);
                put_u16(b, 8);
                b.push(*t);
                b.extend_from_slice(&[0; 3]);
            }
            Instruction::ApplyActions(actions) => {
                put_u16(b, OFPIT_APPLY_ACTIONS);
                put_u16(b, 0);
                b.extend_from_slice(&[0; 4]);
                for a in actions {
                    a.encode(b)?;
                }
                patch_len(b, start + 2, start)?;
            }
        }
        Ok(())
    }

    pub(crate) fn decode_list(mut r: Reader<'_>) -> Result<Vec<Instruction>, DecodeError> {
        let mut out = Vec::new();
        while !r.is_empty() {
            let typ = r.u16()?;
            let len = usize::from(r.u16()?);
            if len < 8 {
                return Err(DecodeError::BadLength {
                    what: "instruction",
                    len,
                });
            }
            let mut i = r.sub(len - 4, "instruction")?;
            out.push(match typ {
                OFPIT_GOTO_TABLE => {
                    let t = i.u8()?;
                    i.skip(3)?;
                    Instruction::GotoTable(t)
                }
                OFPIT_APPLY_ACTIONS => {
                    i.skip(4)?;
                    Instruction::ApplyActions(Action::decode_list(Reader::new(
                        i.rest(),
                        "actions",
                    ))?)
                }
                t => return Err(DecodeError::Unsupported(format!("instruction type {t}"))),
            });
        }
        Ok(out)
    }
}
