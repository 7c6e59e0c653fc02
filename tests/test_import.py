import subprocess
import sys


def test_import_is_light_and_touches_no_gpu() -> None:
    code = (
        "import sys, lowbit\n"
        "heavy = [m for m in ('torch', 'transformers', 'bitsandbytes', 'llama_cpp') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import lowbit.cli\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
