from llmlab.train.mfu import measure_matmul_flops, peak_flops


def test_gpu_peaks_from_the_datasheet_table():
    assert peak_flops("cuda", "NVIDIA H200", "bfloat16") == 989e12
    assert peak_flops("cuda", "NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
    assert peak_flops("cuda", "NVIDIA H100 80GB HBM3", "float32") == 989e12 / 2  # TF32


def test_cpu_peak_is_a_measured_matmul_rate():
    rate = measure_matmul_flops(n=128, seconds=0.05)
    assert 1e8 < rate < 1e14
