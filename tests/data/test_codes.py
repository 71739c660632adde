import datetime as dt
import random
import re

import pytest

from citybrain import codes, masking


def test_published_samples_validate():
    assert codes.check_id_number("11010519491231002X") is None
    assert codes.check_credit_code("91350100M000100Y43") is None
    assert codes.check_org_code("M000100Y4") is None


@pytest.mark.parametrize("value,reason", [
    ("110105194912310021", "id_check"),      # wrong check digit
    ("11010519491231002x", "id_format"),     # lower-case x
    ("1101051949123100", "id_format"),       # too short
    ("110105194902300029", "id_date"),       # 30 February (format passes, calendar does not)
    ("990105194912310025", "id_area"),       # no province 99
    ("110105219912310021", "id_format"),     # year 2199
])
def test_invalid_id_numbers(value, reason):
    assert codes.check_id_number(value) == reason


def test_future_birth_date_refused():
    idn = codes.make_id_number("440115", dt.date(2030, 1, 1), 5)
    assert codes.check_id_number(idn, today=dt.date(2026, 1, 1)) == "id_date"


@pytest.mark.parametrize("value,reason", [
    ("91350100M000100Y44", "uscc_check"),
    ("91350100M000100Y4", "uscc_format"),
    ("91350100M000100I43", "uscc_format"),   # I is not in the character set
    ("Z1350100M000100Y43", "uscc_format"),   # unknown registration authority
    ("91990100M000100Y4Y", "uscc_area"),
])
def test_invalid_credit_codes(value, reason):
    assert codes.check_credit_code(value) == reason


def test_embedded_organisation_code_is_checked():
    # a body whose GB 32100 check character is right but whose GB 11714 organisation code is wrong
    body = "91350100M000100Y5"
    value = body + codes.uscc_check_char(body)
    assert codes.check_org_code("M000100Y5") == "org_check"
    assert codes.check_credit_code(value) == "uscc_org"


def test_generators_make_valid_codes():
    rng = random.Random(3)
    for i in range(200):
        idn = codes.make_id_number("440115", dt.date(1950, 1, 1) + dt.timedelta(days=i * 97), i)
        assert codes.is_valid_id_number(idn)
        assert codes.id_gender(idn) == ("男" if i % 2 else "女")
        assert codes.is_valid_credit_code(codes.make_credit_code("440115", rng))


def test_area_codes():
    assert codes.is_valid_area_code("440115")
    assert codes.check_area_code("440015") == "area_structure"
    assert codes.check_area_code("440011") == "area_structure"
    assert codes.check_area_code("960115") == "area_province"
    assert codes.check_area_code("44011") == "area_format"


def test_masks():
    assert masking.mask_id_number("440115199001011234") == "440115********1234"
    assert masking.mask_phone("13812345678") == "138****5678"
    assert masking.mask_name("张三") == "张*"
    assert masking.mask_name("欧阳娜娜") == "欧阳**"
    assert masking.mask_date(dt.date(1990, 5, 17)) == "1990-**-**"
    assert masking.mask_credit_code("91350100M000100Y43") == "91350100********43"


def test_address_mask_keeps_up_to_the_first_street_word():
    cases = {
        "广东省广州市南沙区珠江街道进港大道450号5栋1006室": "广东省广州市南沙区珠江街道****",  # 街道 before 街
        "广东省广州市南沙区东涌镇横沥大道750号": "广东省广州市南沙区东涌镇****",
        "广州市大岗镇新联村12号": "广州市大岗镇****",  # 大 alone is not a street word
        "南沙区进港大道450号": "南沙区进港大道****",
        "南沙区丰泽东路410号": "南沙区丰泽东路****",
        "第一行\n黄阁镇3号": "黄阁镇****",  # an address over two lines: from the start of the street's line
        "12345678": "1234****",  # no street word: the first half
        "": "",
        None: None,
    }
    for address, masked in cases.items():
        assert masking.mask_address(address) == masked, address
    # the same cut as the plain lazy pattern, over random text made of street words and line breaks
    lazy = re.compile(r"(.*?(?:街道|镇|乡|路|街|大道|巷|村))")
    rng = random.Random(7)
    alphabet = list("街道镇乡路大巷村\n号楼a1")
    for _ in range(20000):
        v = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        m = lazy.search(v)
        assert masking.mask_address(v) == (m.group(1) if m else v[: max(1, len(v) // 2)]) + "****", repr(v)


def test_generated_row_converters_mask_like_the_functions():
    """The exchange's generated row converters (inline mask forms, `masking.INLINE`) give exactly what calling
    each mask function gives, for every kind of value a column can hold."""
    import datetime as dt

    from citybrain.data import service
    from citybrain.data.quality import MASKS

    rng = random.Random(11)
    alphabet = list("街道镇乡路大巷村\n号楼a1X张欧阳")
    values: list = [None, "", "a", "ab", "abc", "abcd", "张", "张三", "欧阳娜娜", "13812345678", "1381234",
                    "138123", "440115199001011234", "44011519900101123X", "123456789", "1234567890", 0, 5,
                    13812345678, 3.5, dt.date(1990, 5, 17), b"bytes", "广东省广州市南沙区黄阁镇进港大道187号"]
    values += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(3000)]
    fields = tuple(f"f{i}" for i in range(len(MASKS))) + ("plain",)
    masks = {f: fn for f, fn in zip(fields, MASKS.values(), strict=False)}
    convert = service._row_maker(fields, masks)
    for v in values:
        row = (v,) * len(fields)
        expected = {f: (masks[f](v) if f in masks else v) for f in fields}
        assert convert(row) == expected, repr(v)
