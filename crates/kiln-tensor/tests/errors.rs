//! Bad input is a clear error on the CPU (the GPU shares the same validation code).

use kiln_tensor::{DType, Device, Tensor, TensorError};
use kiln_wgsl::testing::context_or_skip;

fn t(shape: &[usize]) -> Tensor {
    Tensor::ones(shape, &Device::Cpu).unwrap()
}

#[test]
fn data_that_does_not_fill_the_shape() {
    let err = Tensor::from_vec(vec![1.0; 5], &[2, 3], &Device::Cpu).unwrap_err();
    assert!(matches!(err, TensorError::DataLength(5, _, 6)), "{err}");
}

#[test]
fn shapes_that_do_not_broadcast() {
    let err = t(&[2, 3]).add(&t(&[3, 2])).unwrap_err().to_string();
    assert!(err.contains("add") && err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
}

#[test]
fn matmul_shape_errors_name_the_problem() {
    assert!(t(&[2, 3]).matmul(&t(&[4, 5])).unwrap_err().to_string().contains("inner dimensions"));
    assert!(t(&[2, 2, 3]).matmul(&t(&[3, 3, 4])).unwrap_err().to_string().contains("batch axes"));
    assert!(t(&[3]).matmul(&t(&[3, 1])).is_err());
    assert_eq!(t(&[2, 3]).matmul_t(&t(&[4, 3]), false, true).unwrap().shape(), &[2, 4]);
}

#[test]
fn axes_out_of_range() {
    assert!(matches!(t(&[2, 3]).sum(2, false), Err(TensorError::InvalidAxis { axis: 2, rank: 2, .. })));
    assert!(t(&[2, 3]).mean(-3, false).is_err());
    assert!(t(&[]).sum(0, false).is_err());
    assert!(t(&[2, 3]).transpose(0, 5).is_err());
}

#[test]
fn invalid_permutations_and_reshapes() {
    assert!(t(&[2, 3]).permute(&[0, 0]).is_err());
    assert!(t(&[2, 3]).permute(&[0]).is_err());
    assert!(t(&[2, 3]).permute(&[0, 2]).is_err());
    assert!(t(&[2, 3]).reshape(&[4]).is_err());
    assert!(t(&[2, 3]).broadcast_to(&[3, 3]).is_err());
    assert!(t(&[2, 3]).t().is_ok() && t(&[2]).t().is_err());
}

#[test]
fn integer_tensors_refuse_float_ops() {
    let labels = Tensor::from_vec_i32(vec![1, 2], &[2], &Device::Cpu).unwrap();
    assert!(matches!(labels.exp(), Err(TensorError::DTypeMismatch { .. })));
    assert!(labels.to_vec().is_err());
    assert!(t(&[2]).add(&labels).is_err());
    assert!(t(&[2]).to_vec_i32().is_err());
}

#[test]
fn to_scalar_needs_one_element() {
    assert_eq!(t(&[]).to_scalar().unwrap(), 1.0);
    assert_eq!(t(&[1, 1]).to_scalar().unwrap(), 1.0);
    assert!(t(&[2]).to_scalar().is_err());
}

/// A tensor's type and device come from its storage alone, so they survive every move, and
/// reading it as another type is an error on either device.
#[test]
fn type_and_device_follow_the_data() {
    let Some(ctx) = context_or_skip("type_and_device_follow_the_data") else { return };
    let gpu = Device::Gpu(ctx);
    for device in [Device::Cpu, gpu.clone()] {
        let bytes = Tensor::from_vec_u8(vec![0, 7, 255, 1], &[2, 2], &device).unwrap();
        let labels = Tensor::from_vec_i32(vec![3, -1], &[2], &device).unwrap();
        for (tensor, dtype) in [(&bytes, DType::U8), (&labels, DType::I32)] {
            assert_eq!((tensor.dtype(), tensor.device()), (dtype, device.clone()));
            assert!(matches!(tensor.to_vec(), Err(TensorError::DTypeMismatch { got, .. }) if got == dtype));
            let there = tensor.to(&gpu).unwrap().to(&Device::Cpu).unwrap();
            assert_eq!((there.dtype(), there.device()), (dtype, Device::Cpu));
        }
        assert!(matches!(bytes.to_vec_i32(), Err(TensorError::DTypeMismatch { expected: DType::I32, .. })));
        assert!(matches!(labels.to_vec_u8(), Err(TensorError::DTypeMismatch { expected: DType::U8, .. })));
        assert!(bytes.t().is_err(), "u8 moves whole rows only, on {device}");
        assert_eq!(bytes.index_select(&[1]).unwrap().to_vec_u8().unwrap(), [255, 1]);
        assert_eq!(labels.to_f32().unwrap().to_vec().unwrap(), [3.0, -1.0]);
        assert_eq!(bytes.to_f32().unwrap().device(), device);
    }
}
