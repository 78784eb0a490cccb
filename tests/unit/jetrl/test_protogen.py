from jetrl import protogen


def test_generated_code_is_fresh():
    assert protogen.stale_files() == [], "run `python -m jetrl.protogen` and commit jetrl/v1/"


def test_generated_package_is_marked():
    assert "GENERATED" in (protogen.ROOT / "jetrl" / "v1" / "__init__.py").read_text()
