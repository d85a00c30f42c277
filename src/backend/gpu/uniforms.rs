//! One `#[repr(C)]` uniform struct per kernel, the Rust twin of the WGSL `Params` struct the
//! kernel binds at `@binding(0)`. Each struct is declared through [`uniform!`], which also
//! records its field names, offsets and scalar types in a [`Layout`]; a native test parses
//! every shader with naga and compares that layout with naga's reflection of the WGSL struct,
//! so a field added, dropped or reordered on one side only fails `cargo test`, not a training
//! run.

/// A scalar type a uniform field may have (every field of our uniforms is a 4-byte scalar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar {
    U32,
    F32,
}

/// The [`Scalar`] of a Rust field type.
pub(crate) trait WgslScalar {
    const SCALAR: Scalar;
}

impl WgslScalar for u32 {
    const SCALAR: Scalar = Scalar::U32;
}

impl WgslScalar for f32 {
    const SCALAR: Scalar = Scalar::F32;
}

/// One field of a uniform struct: its name, byte offset and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub scalar: Scalar,
}

/// The memory layout of a uniform struct, and the name of its WGSL twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub wgsl_struct: &'static str,
    pub size: usize,
    pub fields: &'static [Field],
}

/// A kernel's uniform: plain old data whose bytes are the WGSL struct's.
pub(crate) trait Uniform: bytemuck::Pod {
    const LAYOUT: Layout;
}

/// Declares a `#[repr(C)]` Pod uniform struct and its [`Layout`] from one field list, so the
/// layout the test checks is the struct the GPU receives.
macro_rules! uniform {
    ($(#[$meta:meta])* $name:ident = $wgsl:literal {
        $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)?
    }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $($(#[$fmeta])* pub $field: $ty),*
        }

        impl $crate::backend::gpu::uniforms::Uniform for $name {
            const LAYOUT: $crate::backend::gpu::uniforms::Layout =
                $crate::backend::gpu::uniforms::Layout {
                wgsl_struct: $wgsl,
                size: ::std::mem::size_of::<$name>(),
                fields: &[$($crate::backend::gpu::uniforms::Field {
                    name: stringify!($field),
                    offset: ::std::mem::offset_of!($name, $field),
                    scalar: <$ty as $crate::backend::gpu::uniforms::WgslScalar>::SCALAR,
                }),*],
            };
        }
    };
}

uniform! {
    /// `shaders/gather_rows.wgsl`.
    GatherParams = "Params" {
        /// Floats per row of the source and destination matrices.
        width: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform! {
    /// `shaders/add_offset.wgsl`.
    AddOffsetParams = "Params" {
        /// Outputs per row of the head's output buffer.
        stride: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform! {
    /// `shaders/linear_forward.wgsl`.
    LinearForwardParams = "Params" {
        in_dim: u32,
        out_dim: u32,
        /// 0 identity, 1 ReLU, 2 tanh.
        activation: u32,
        w_offset: u32,
        b_offset: u32,
        /// Where this layer's rows start in `pre` / `post` (the exposure head shares them).
        out_offset: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

uniform! {
    /// `shaders/linear_backward_input.wgsl`.
    LinearBackwardInputParams = "Params" {
        in_dim: u32,
        out_dim: u32,
        /// The activation of the layer below, whose derivative the gradient passes through.
        activation: u32,
        w_offset: u32,
        delta_offset: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform! {
    /// `shaders/linear_backward_weights.wgsl`.
    LinearBackwardWeightsParams = "Params" {
        in_dim: u32,
        out_dim: u32,
        w_offset: u32,
        b_offset: u32,
        /// Where this layer's rows start in `delta` (the exposure head shares `d_out`).
        delta_offset: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform! {
    /// `shaders/adamw.wgsl`.
    AdamWParams = "Params" {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        /// Parameters in the flat buffer.
        count: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

uniform! {
    /// `shaders/step_end.wgsl`.
    StepEndParams = "Params" {
        /// 1 after an optimizer step (advance `state[1]`), 0 after a validation pass.
        advance_optimizer: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform! {
    /// `LossParams` of `shaders/logistic.wgsl`, shared by the four loss kernels.
    LossParams = "LossParams" {
        /// 0 training step (gradients and epoch sums), 1 evaluation (loss only).
        mode: u32,
        nonneg: u32,
        logit_clip: f32,
        /// `loss_bce`: 1 = SNIPS self-normalisation.
        variant: u32,
        beta_lambda: f32,
        beta_alpha0: f32,
        beta_beta0: f32,
        beta_tau_min: f32,
        /// Where the exposure logits (and their gradients) start in `outputs` / `d_out`.
        aux_offset: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Differences between `expected` and the WGSL struct bound at `@group(0) @binding(0)` of
/// `module` (naga's reflection: struct name, span, member names, offsets and types); empty
/// when they agree.
#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) fn layout_mismatches(module: &naga::Module, expected: &Layout) -> Vec<String> {
    let binding = naga::ResourceBinding {
        group: 0,
        binding: 0,
    };
    let Some((_, global)) = module
        .global_variables
        .iter()
        .find(|(_, g)| g.binding.as_ref() == Some(&binding))
    else {
        return vec!["no resource at @group(0) @binding(0)".into()];
    };
    let ty = &module.types[global.ty];
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        return vec![format!("@binding(0) is not a struct: {:?}", ty.inner)];
    };
    let mut errors = Vec::new();
    if ty.name.as_deref() != Some(expected.wgsl_struct) {
        errors.push(format!(
            "struct name: WGSL {:?}, Rust {:?}",
            ty.name, expected.wgsl_struct
        ));
    }
    if *span as usize != expected.size {
        errors.push(format!(
            "size: WGSL {span} bytes, Rust {} bytes",
            expected.size
        ));
    }
    if members.len() != expected.fields.len() {
        errors.push(format!(
            "fields: WGSL {}, Rust {}",
            members.len(),
            expected.fields.len()
        ));
    }
    for (i, (m, f)) in members.iter().zip(expected.fields).enumerate() {
        let name = m.name.as_deref().unwrap_or("");
        let scalar = match module.types[m.ty].inner {
            naga::TypeInner::Scalar(naga::Scalar {
                kind: naga::ScalarKind::Uint,
                width: 4,
            }) => Some(Scalar::U32),
            naga::TypeInner::Scalar(naga::Scalar {
                kind: naga::ScalarKind::Float,
                width: 4,
            }) => Some(Scalar::F32),
            _ => None,
        };
        if name != f.name || m.offset as usize != f.offset || scalar != Some(f.scalar) {
            errors.push(format!(
                "field {i}: WGSL {name} at {} ({scalar:?}), Rust {} at {} ({:?})",
                m.offset, f.name, f.offset, f.scalar
            ));
        }
    }
    errors
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::backend::gpu::kernels::Kernel;

    fn parse(kernel: Kernel) -> naga::Module {
        let source = kernel.source();
        naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", kernel.name(), e.emit_to_string(&source)))
    }

    /// Every kernel's Rust uniform has the size, field names, offsets and types of the WGSL
    /// struct it binds.
    #[test]
    fn every_uniform_matches_its_wgsl_struct() {
        for kernel in Kernel::ALL {
            let errors = layout_mismatches(&parse(kernel), kernel.uniform_layout());
            assert!(errors.is_empty(), "{}: {errors:#?}", kernel.name());
        }
    }

    uniform! {
        /// `LinearForwardParams` with `in_dim` and `out_dim` swapped: the bug the check exists for.
        #[allow(dead_code)]
        Misordered = "Params" {
            out_dim: u32,
            in_dim: u32,
            activation: u32,
            w_offset: u32,
            b_offset: u32,
            out_offset: u32,
            _pad0: u32,
            _pad1: u32,
        }
    }

    uniform! {
        /// `GatherParams` without its padding: 4 bytes where WGSL has 16.
        #[allow(dead_code)]
        Unpadded = "Params" {
            width: u32,
        }
    }

    uniform! {
        /// `AdamWParams` with `count` declared as a float.
        #[allow(dead_code)]
        Retyped = "Params" {
            lr: f32,
            beta1: f32,
            beta2: f32,
            eps: f32,
            weight_decay: f32,
            count: f32,
            _pad0: u32,
            _pad1: u32,
        }
    }

    #[test]
    fn a_misordered_field_is_caught() {
        let errors = layout_mismatches(&parse(Kernel::LinearForward), &Misordered::LAYOUT);
        assert_eq!(
            errors,
            vec![
                "field 0: WGSL in_dim at 0 (Some(U32)), Rust out_dim at 0 (U32)".to_string(),
                "field 1: WGSL out_dim at 4 (Some(U32)), Rust in_dim at 4 (U32)".to_string(),
            ]
        );
    }

    #[test]
    fn a_missing_pad_and_a_wrong_type_are_caught() {
        let errors = layout_mismatches(&parse(Kernel::Gather), &Unpadded::LAYOUT);
        assert_eq!(
            errors,
            vec![
                "size: WGSL 16 bytes, Rust 4 bytes".to_string(),
                "fields: WGSL 4, Rust 1".to_string(),
            ]
        );
        let errors = layout_mismatches(&parse(Kernel::AdamW), &Retyped::LAYOUT);
        assert_eq!(
            errors,
            vec!["field 5: WGSL count at 20 (Some(U32)), Rust count at 20 (F32)".to_string()]
        );
    }

    /// The wrong WGSL struct (a loss kernel binds `LossParams`) is caught by name and size.
    #[test]
    fn the_wrong_struct_is_caught() {
        let errors = layout_mismatches(&parse(Kernel::LossBce), &GatherParams::LAYOUT);
        assert!(errors[0].starts_with("struct name"), "{errors:?}");
        assert!(errors[1].starts_with("size: WGSL 48 bytes"), "{errors:?}");
    }
}
