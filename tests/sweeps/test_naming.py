"""A run directory's name: short names are the overrides themselves; a long one (many overrides) stays a valid,
unique and repeatable directory name, so the same command still finds its checkpoint."""
from hybrid.sweep.naming import DEFAULT, MAX_NAME, run_name


def test_short_names_are_the_overrides_and_none_is_default():
    assert run_name("model.d_model=64,seed=1") == "model.d_model=64,seed=1"
    assert run_name("") == DEFAULT


def test_a_long_name_fits_a_file_system_and_stays_unique_and_repeatable(tmp_path):
    overrides = ",".join(f"task.option_{i}=value_{i}" for i in range(30))  # ~600 bytes: over the 255 of a file name
    other = overrides.replace("value_29", "value_30")
    name = run_name(overrides)
    assert len(name.encode()) <= MAX_NAME < 255
    assert name.startswith("task.option_0=value_0,")
    assert run_name(overrides) == name and run_name(other) != name
    (tmp_path / name).mkdir()  # the file system takes it


def test_a_long_name_never_cuts_a_multibyte_character():
    name = run_name("note=" + "é" * 300)
    name.encode().decode()  # valid UTF-8
    assert len(name.encode()) <= MAX_NAME
