"""The core package must not pull orchestration or tracking libraries."""

import subprocess
import sys

HEAVY = ("prefect", "mlflow", "great_expectations", "dvc", "boto3")


def test_importing_phenexplain_does_not_import_services():
    code = (
        "import sys, phenexplain, phenexplain.cli, phenexplain.config, phenexplain.data.synthetic, "
        "phenexplain.measure.plate_summary, phenexplain.bench\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_does_not_import_torch_or_numpy_heavy_stacks():
    code = "import sys, phenexplain.cli; print('torch' in sys.modules, 'skimage' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
