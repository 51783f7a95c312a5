"""CPU feature detection: what /proc/cpuinfo says decides the bf16 paths."""
import shvit_mm.utils.cpu as cpu


def test_bf16_support_follows_the_reported_flags(monkeypatch):
    monkeypatch.setattr(cpu.torch, 'cpu', None)  # only the flags speak
    for flags, expected in (({'avx2'}, (False, False)), ({'avx512_bf16'}, (True, False)),
                            ({'amx_bf16', 'amx_tile'}, (False, True))):
        monkeypatch.setattr(cpu, 'cpu_flags', lambda flags=flags: set(flags))
        sup = cpu.cpu_bf16_support()
        assert (sup['avx512_bf16'], sup['amx_bf16']) == expected
        assert sup['fast'] == any(expected)


def test_this_machine_is_described():
    sup = cpu.cpu_bf16_support()
    assert sup['fast'] == (sup['avx512_bf16'] or sup['amx_bf16'])
    if 'avx512_bf16' in cpu.cpu_flags():
        assert sup['avx512_bf16']
    assert cpu.cpu_model()
