"""The schema machinery: typed values, one error naming source, key and the close match."""

from __future__ import annotations

import pytest

from fedmi.shared.config_schema import ConfigError, Schema, Setting

FLAT = Schema(
    "test config",
    {
        "": (
            Setting("rounds", int, 3, "rounds", minimum=1),
            Setting("rate", float, 0.5, "rate", minimum=0, maximum=1, exclusive_maximum=True),
            Setting("name", str, "a", "name", choices=("a", "b")),
            Setting("switch", bool, True, "on or off"),
            Setting("budget", float, 8.0, "budget", minimum=0, formerly=("old-budget",)),
            Setting(
                "items", str, "", "items", check=lambda v: "must be short" if len(v) > 3 else None
            ),
        )
    },
)
TABLED = Schema(
    "site.toml",
    {
        "site": (Setting("role", str, "train", "role", choices=("train", "holdout")),),
        "privacy": (
            Setting("epsilon", float, 8.0, "ε", minimum=0, exclusive_minimum=True),
            Setting("delta", float, 1e-5, "δ", minimum=0, maximum=1, exclusive_minimum=True),
        ),
    },
    ignored_tables=("truth",),
)


class MyError(ConfigError):
    pass


def test_values_come_back_typed_and_checked():
    # Prepare / Execute / Assert
    got = FLAT.validate({"rounds": 2, "rate": 0, "switch": "off", "name": "b"}, "here")
    assert got == {"rounds": 2, "rate": 0.0, "switch": False, "name": "b"}
    assert isinstance(got["rate"], float)
    assert FLAT.validate({}, "here") == {}
    assert FLAT.defaults()["rounds"] == 3 and FLAT.keys()[0] == "rounds"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rounds": "3"}, r"^here: `rounds` must be a whole number \(at least 1\), not '3'$"),
        ({"rounds": True}, r"`rounds` must be a whole number"),
        ({"rounds": 2.0}, r"`rounds` must be a whole number"),
        ({"rounds": 0}, r"`rounds` must be a whole number \(at least 1\), not 0$"),
        ({"rate": 1.0}, r"`rate` must be a number \(at least 0 and less than 1\), not 1.0$"),
        ({"rate": float("nan")}, r"`rate` must be a number"),
        ({"name": "c"}, r'`name` must be one of "a", "b", not \'c\'$'),
        ({"name": 1}, r"`name` must be one of"),
        ({"switch": "maybe"}, r'`switch` must be "on" or "off" \(or true / false\)'),
        ({"switch": 1}, r'`switch` must be "on" or "off"'),
        ({"items": "abcd"}, r"^here: `items` must be short, not 'abcd'$"),
    ],
)
def test_wrong_types_and_values_name_the_key_and_what_was_expected(values, message):
    with pytest.raises(ConfigError, match=message):
        FLAT.validate(values, "here")


def test_unknown_keys_suggest_the_close_match():
    with pytest.raises(
        ConfigError, match=r"^src: `rouds` is not a test config setting; did you mean `rounds`\?$"
    ):
        FLAT.validate({"rouds": 3}, "src")
    # an old name, and snake_case for kebab-case, point at the key
    with pytest.raises(ConfigError, match=r"`old-budget` is not .*; did you mean `budget`\?"):
        FLAT.validate({"old-budget": 3}, "src")
    with pytest.raises(ConfigError, match=r"`old_budget` is not .*; did you mean `budget`\?"):
        FLAT.validate({"old_budget": 3}, "src")
    # nothing close: no guess
    with pytest.raises(ConfigError, match=r"`zzz` is not a test config setting$"):
        FLAT.validate({"zzz": 1}, "src")


def test_tables_keys_outside_their_table_and_ignored_tables():
    doc = {"site": {"role": "holdout"}, "privacy": {"epsilon": 2}, "truth": {"x": 1}}
    assert TABLED.validate(doc, "f") == {"site": {"role": "holdout"}, "privacy": {"epsilon": 2.0}}
    assert TABLED.validate({}, "f") == {"site": {}, "privacy": {}}
    cases = [
        ({"Site": {}}, r"^f: \[Site\] is not a table of site\.toml .*; did you mean \[site\]\?$"),
        ({"role": "holdout"}, r"^f: `role` belongs in \[site\], not at the top level$"),
        ({"site": {"epsilon": 1}}, r"^f: `epsilon` belongs in \[privacy\], not in \[site\]$"),
        (
            {"privacy": {"epsilom": 1}},
            r"^f: `epsilom` is not a setting of \[privacy\]; did you mean `epsilon`\?$",
        ),
        (
            {"site": {"epsilom": 1}},
            r"`epsilom` is not a setting of \[site\]; did you mean `epsilon` in \[privacy\]\?$",
        ),
        (
            {"privacy": {"delta": 2}},
            r"^f: \[privacy\] `delta` must be a number \(greater than 0 and at most 1\), not 2$",
        ),
        (
            {"zzz": 1},
            r"`zzz` is not a setting of site\.toml \(its settings go in \[site\] or \[privacy\]\)$",
        ),
        ({"site": {"sub": {"a": 1}}}, r"\[site\.sub\] is not a table of site\.toml$"),
    ]
    for doc, message in cases:
        with pytest.raises(ConfigError, match=message):
            TABLED.validate(doc, "f")


def test_the_caller_chooses_the_error_class():
    with pytest.raises(MyError):
        FLAT.validate({"nope": 1}, "src", error=MyError)
    assert issubclass(ConfigError, ValueError)


def test_command_line_values_are_read_with_the_keys_type():
    got = FLAT.parse_pairs(["rounds=4", "rate=0.25", "name=b", "switch=false", 'items="ab"'], "--x")
    assert got == {"rounds": 4, "rate": 0.25, "name": "b", "switch": False, "items": "ab"}
    with pytest.raises(
        ConfigError, match=r"^--x: `rounds` must be a whole number \(at least 1\), not 'many'$"
    ):
        FLAT.parse_pairs(["rounds=many"], "--x")
    with pytest.raises(
        ConfigError, match=r"^--x: `rouds` is not a test config setting; did you mean `rounds`\?$"
    ):
        FLAT.parse_pairs(["rouds=4"], "--x")
    with pytest.raises(ConfigError, match="write KEY=VALUE"):
        FLAT.parse_pairs(["rounds"], "--x")


def test_reference_table_lists_every_key_with_type_default_and_range():
    text = TABLED.markdown("privacy")
    assert text.splitlines()[0] == "| key | type | default | allowed | meaning |"
    assert "| `delta` | number | `1e-05` | greater than 0 and at most 1 | δ |" in text
    assert "`role`" not in text and "`role`" in TABLED.markdown()
