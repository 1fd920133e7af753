//! The blocks of a task file, one file each, and the table every block is read through.
//!
//! Each block (`task`, `input`, `container`, `toleration`, `ssh`) has one [`Field`] table: the name
//! of each attribute and nested block it admits, what it expects there, and the function that
//! reads it into the block's model. [`check_body`] checks a block against its table (so the
//! names it lists in messages and its did-you-mean hints are the ones it reads); the [`Body`]
//! it returns hands each attribute and nested block to its reader, attributes and blocks each
//! in the order written, in the phases the block needs (checks across fields in between).

mod container;
mod input;
mod kube_values;
mod ssh;
pub(super) mod task;
mod toleration;

use hcl_edit::Span;
use hcl_edit::structure::{Attribute, Block, Structure};

use super::TaskError;
use super::reader::{Reader, did_you_mean};

/// Reads one attribute of a block into the block's model `M`; the `&str` names the block, for
/// messages (`` `container` in task "a" ``).
type ReadAttribute<M> = fn(&Reader, &Attribute, &str, &mut M) -> Result<(), TaskError>;

/// Reads one nested block into its parent's model `M`; the `&str` names the parent.
type ReadBlock<M> = fn(&Reader, &Block, &str, &mut M) -> Result<(), TaskError>;

/// One name a block admits.
pub(super) struct Field<M> {
    pub(super) name: &'static str,
    pub(super) expects: Expects<M>,
}

/// What a name stands for in its block, and how it is read.
pub(super) enum Expects<M> {
    /// `name = value`.
    Attribute(ReadAttribute<M>),
    /// A nested block, written as `syntax` in messages.
    Block {
        syntax: &'static str,
        read: ReadBlock<M>,
    },
}

impl<M> Field<M> {
    fn is_attribute(&self) -> bool {
        matches!(self.expects, Expects::Attribute(_))
    }
}

/// The attributes and nested blocks of a block, checked against its table, each with its
/// reader, in the order written.
pub(super) struct Body<'b, M> {
    attributes: Vec<(&'b Attribute, ReadAttribute<M>)>,
    blocks: Vec<(&'b Block, ReadBlock<M>)>,
}

impl<M> Body<'_, M> {
    /// Reads the attributes into `model`, in the order written.
    pub(super) fn read_attributes(
        &self,
        file: &Reader,
        here: &str,
        model: &mut M,
    ) -> Result<(), TaskError> {
        for (attr, read) in &self.attributes {
            read(file, attr, here, model)?;
        }
        Ok(())
    }

    /// Reads the attributes `wanted` keeps into `model`, in the order of `table` rather than
    /// the order written (the task block's order, which its messages have always followed).
    pub(super) fn read_attributes_in_table_order(
        &self,
        file: &Reader,
        here: &str,
        table: &[Field<M>],
        wanted: &dyn Fn(&str) -> bool,
        model: &mut M,
    ) -> Result<(), TaskError> {
        for field in table.iter().filter(|field| wanted(field.name)) {
            let found = self
                .attributes
                .iter()
                .find(|(attr, _)| attr.key.as_str() == field.name);
            if let Some((attr, read)) = found {
                read(file, attr, here, model)?;
            }
        }
        Ok(())
    }

    /// Reads the nested blocks into `model`, in the order written.
    pub(super) fn read_blocks(
        &self,
        file: &Reader,
        here: &str,
        model: &mut M,
    ) -> Result<(), TaskError> {
        for (inner, read) in &self.blocks {
            read(file, inner, here, model)?;
        }
        Ok(())
    }
}

/// Checks then reads `block`: its attributes, then its nested blocks, each into `model`.
pub(super) fn read_body<M>(
    file: &Reader,
    block: &Block,
    here: &str,
    table: &[Field<M>],
    model: &mut M,
) -> Result<(), TaskError> {
    let body = check_body(file, block, here, table)?;
    body.read_attributes(file, here, model)?;
    body.read_blocks(file, here, model)
}

/// Checks every attribute and block of `block` against `table`, in the order written: an
/// unknown name, or an attribute written as a block (or the reverse), is refused with what was
/// expected, before anything is read. `here` names the block, for messages.
pub(super) fn check_body<'b, M>(
    file: &Reader,
    block: &'b Block,
    here: &str,
    table: &[Field<M>],
) -> Result<Body<'b, M>, TaskError> {
    let attributes: Vec<&str> = names(table, true);
    let blocks: Vec<&str> = names(table, false);
    let mut found_attributes = Vec::new();
    let mut found_blocks = Vec::new();
    for structure in block.body.iter() {
        let (span, message) = match structure {
            Structure::Attribute(attr) => {
                let key = attr.key.as_str();
                match find(table, key).map(|field| &field.expects) {
                    Some(Expects::Attribute(read)) => {
                        found_attributes.push((attr, *read));
                        continue;
                    }
                    Some(Expects::Block { syntax, .. }) => {
                        let message = format!(
                            "`{key}` in {here} is a block, not an attribute; expected {syntax}"
                        );
                        (attr.span(), message)
                    }
                    None => {
                        let message = format!(
                            "unknown attribute `{key}` in {here}; expected one of: {}{}",
                            attributes.join(", "),
                            did_you_mean(key, &attributes)
                        );
                        (attr.span(), message)
                    }
                }
            }
            Structure::Block(inner) => {
                let ident = inner.ident.as_str();
                match find(table, ident).map(|field| &field.expects) {
                    Some(Expects::Block { read, .. }) => {
                        found_blocks.push((inner, *read));
                        continue;
                    }
                    Some(Expects::Attribute(_)) => {
                        let message = format!(
                            "`{ident}` in {here} is an attribute, not a block; expected `{ident} = ...`"
                        );
                        (inner.span(), message)
                    }
                    None if blocks.is_empty() => {
                        let message = format!(
                            "unexpected block `{ident}` in {here}; expected only attributes: {}",
                            attributes.join(", ")
                        );
                        (inner.span(), message)
                    }
                    None => {
                        let message = format!(
                            "unknown block type `{ident}` in {here}; expected one of: {}{}",
                            blocks.join(", "),
                            did_you_mean(ident, &blocks)
                        );
                        (inner.ident.span(), message)
                    }
                }
            }
        };
        return Err(file.invalid(span, message));
    }
    Ok(Body {
        attributes: found_attributes,
        blocks: found_blocks,
    })
}

/// Refuses a label on a block that takes none (`container`, `toleration`, `ssh`).
fn no_label(file: &Reader, block: &Block, here: &str) -> Result<(), TaskError> {
    match block.labels.first() {
        Some(label) => Err(file.invalid(
            label.span(),
            format!(
                "{here} takes no label; expected `{} {{ ... }}`",
                block.ident.as_str()
            ),
        )),
        None => Ok(()),
    }
}

fn find<'t, M>(table: &'t [Field<M>], name: &str) -> Option<&'t Field<M>> {
    table.iter().find(|field| field.name == name)
}

/// The names of the attributes (or of the nested blocks) of `table`, in its order.
fn names<M>(table: &[Field<M>], attributes: bool) -> Vec<&'static str> {
    table
        .iter()
        .filter(|field| field.is_attribute() == attributes)
        .map(|field| field.name)
        .collect()
}
