"""CJK segmentation (csrc/cp_jieba.c, cp_mecab.c, cp_segment.c) against the references: jieba.lcut(s, HMM=True)
and MeCab's own `mecab -Owakati` with the same dictionary.

The user-word tests change the process-wide dictionary; every change is mirrored into jieba's default tokenizer
(jieba.dt) so that later comparisons still compare equal states.
"""
import logging
import os
import random
import shutil
import subprocess
import threading

import jieba
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clipprompt as cp
from clipprompt import _C
from tests.conftest import read_stsb

jieba.setLogLevel(logging.WARNING)
jieba.initialize()


def stsb_sentences(lang):
    rows = read_stsb(lang)
    return [r[0] for r in rows] + [r[1] for r in rows]


def no_space(tokens):
    return [t for t in tokens if not t.isspace()]


# Product-taxonomy-style prompts as they come from Chinese e-commerce catalogues: brand + attributes + category,
# mixed with Latin model names, sizes, percentages and spaces.
PRODUCT_PROMPTS = [
    "红色连衣裙 女 夏季", "shirt 白色 短袖", "UNIQLO白色短袖T恤", "男士纯棉圆领T恤 黑色 XL", "儿童防滑运动鞋 春秋款",
    "苹果iPhone 15 Pro Max 256GB 手机壳 透明防摔", "华为Mate60 Pro 钢化膜", "小米空气净化器4 Lite 滤芯",
    "不锈钢保温杯 500ml 大容量", "北欧风格实木餐桌椅组合 一桌四椅", "女士真皮单肩包 复古 小方包",
    "加厚珊瑚绒毛毯 冬季 双人",
    "无线蓝牙耳机 降噪 运动型", "婴儿纸尿裤 L码 超薄透气", "有机绿茶 西湖龙井 2024新茶 250g", "智能手表 心率监测 防水",
    "男款羽绒服 90%白鸭绒 连帽", "宠物猫粮 成猫 鱼肉味 10kg", "电动牙刷 声波 软毛 情侣款", "游戏机械键盘 青轴 RGB背光",
    "高腰阔腿牛仔裤女 显瘦 九分", "法式复古碎花雪纺裙", "客厅落地灯 LED 护眼 可调光", "厨房多功能料理机 破壁 静音",
    "笔记本电脑双肩包 15.6寸 商务", "户外登山鞋 防水 男女同款", "純棉床上四件套 1.8m床", "车载手机支架 出风口 磁吸",
    "儿童益智积木玩具 3-6岁", "日式陶瓷餐具套装 碗碟", "运动瑜伽裤 女 高弹 速干", "复古黑胶唱片机 蓝牙音箱一体",
    "防晒霜 SPF50+ PA++++ 清爽不油腻", "口红 哑光 #999 正红色", "洗衣液 薰衣草香 3kg*2瓶", "一次性医用口罩 50只装",
    "全自动咖啡机 意式 家用", "折叠自行车 20寸 变速", "加湿器 卧室 静音 大雾量", "羊毛围巾 格子 男女通用",
    "A4打印纸 70g 500张/包", "硅胶厨具套装 不粘锅专用", "相机三脚架 便携 自拍杆", "男士商务皮带 自动扣 头层牛皮",
    "夏季冰丝凉席三件套", "新款韩版宽松卫衣女ins潮", "进口牛排 澳洲 原切 西冷", "学生台灯 USB充电 护眼",
    "电竞椅 人体工学 可躺",
    "女童公主裙 生日礼服 蓬蓬纱", "防蓝光眼镜 平光 电脑护目镜", "多肉植物 盆栽 办公室桌面",
]


# ---- Chinese: jieba -----------------------------------------------------------------------------------------


def test_dictionary_matches_jieba():
    info = _C.jieba_info()
    assert info["total"] == jieba.dt.total
    assert info["entries"] == len(jieba.dt.FREQ)
    for w in ["的", "清华大学", "清华大", "AT&T", "γ射线", "不存在的词语组合"]:
        assert _C.jieba_freq(w) == jieba.dt.FREQ.get(w), w


def test_stsb_zh_identical_to_jieba():
    sents = stsb_sentences("zh")
    diffs = [(s, _C.jieba_lcut(s), jieba.lcut(s, HMM=True)) for s in sents]
    diffs = [d for d in diffs if d[1] != d[2]]
    for s, ours, ref in diffs:
        print("DIFF", repr(s), "\n  ours ", ours, "\n  jieba", ref)
    assert len(diffs) <= 0.001 * len(sents), f"{len(diffs)} of {len(sents)} sentences differ"
    assert len(sents) == 3000


def test_stsb_zh_segment_and_batch():
    sents = stsb_sentences("zh")
    ref = [no_space(jieba.lcut(s)) for s in sents]
    assert [cp.segment(s, lang="zh") for s in sents] == ref
    assert cp.segment_batch(sents, lang="zh") == ref
    # auto: no kana in these sentences -> zh; chunks without Han stay whole, the rest is jieba's
    for s, r in zip(sents, ref):
        if all(any("\u4e00" <= c <= "\u9fff" for c in chunk) for chunk in s.split()):
            assert cp.segment(s) == r, s


def test_jieba_no_hmm_path():
    for s in stsb_sentences("zh")[:300] + PRODUCT_PROMPTS:
        assert _C.jieba_lcut(s, hmm=False) == jieba.lcut(s, HMM=False), s


def test_product_prompts_identical():
    for s in PRODUCT_PROMPTS:
        assert _C.jieba_lcut(s) == jieba.lcut(s), s
        assert cp.segment(s, "zh") == no_space(jieba.lcut(s)), s


def test_mixed_prompts_auto():
    assert cp.segment("shirt 白色 短袖") == ["shirt", "白色", "短袖"]
    assert cp.segment("UNIQLO白色短袖T恤") == ["UNIQLO", "白色", "短袖", "T恤"]
    assert cp.segment("红色连衣裙 女 夏季") == ["红色", "连衣裙", "女", "夏季"]
    # Latin chunks are kept whole in auto mode, jieba splits them in zh mode
    assert cp.segment("T-shirt, 白色") == ["T-shirt,", "白色"]
    assert cp.segment("T-shirt, 白色", "zh") == ["T", "-", "shirt", ",", "白色"]
    assert cp.segment("a photo of a cat.") == ["a", "photo", "of", "a", "cat."]
    assert cp.segment("红色 连衣裙", lang="none") == ["红色", "连衣裙"]
    assert cp.segment(b"shirt \xe7\x99\xbd\xe8\x89\xb2") == ["shirt", "白色"]
    assert _C.segment_detect("白色短袖") == "zh"
    assert _C.segment_detect("白いシャツ") == "ja"
    assert _C.segment_detect("a photo") == "none"
    for s in [*PRODUCT_PROMPTS, "shirt 白色 短袖", "白いシャツ UNIQLO"]:
        assert _C.segment_join(s) == " ".join(cp.segment(s))
        assert _C.segment_join(s, "zh") == " ".join(cp.segment(s, "zh"))


HAN = "的一是在不了有人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也" \
      "能下过子说产种面而方后多定行学" \
      "清华北京大学研究生命起源红色连衣裙短袖白色夏季女鞋手机壳网易杭研厦门龙井茶叶蛋糕店长沙发" \
      "齉龘靐齾爩鱻麤龗灪籲鬱爨"  # rare characters (little or no HMM emission data)
EXOTIC = "\u9fd6\u9fea\u3400\u4dbf\U00020000\u3007\uf900"  # Han outside jieba's \u4E00-\u9FD5
LATIN = "abcxyzABCXYZ0123456789"
PUNCT = "+#&._%-,.!?()[]/'\"，。、！？：；（）《》·～…×"
SPACE = " \t\r\n\u3000\xa0"
mixed_text = st.text(alphabet=st.sampled_from(list(HAN + EXOTIC + LATIN + PUNCT + SPACE)), min_size=0, max_size=40)
han_heavy = st.lists(st.sampled_from(list(HAN) * 4 + list(LATIN + PUNCT + " .%")), min_size=1, max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(mixed_text)
def test_hypothesis_mixed_identical(s):
    ref = jieba.lcut(s)
    assert _C.jieba_lcut(s) == ref
    assert _C.jieba_lcut(s, hmm=False) == jieba.lcut(s, HMM=False)
    if no_space(ref):
        assert cp.segment(s, "zh") == no_space(ref)


@settings(max_examples=300, deadline=None)
@given(han_heavy)
def test_hypothesis_han_runs_identical(s):
    assert _C.jieba_lcut(s) == jieba.lcut(s)


def test_long_text():
    s = "".join(stsb_sentences("zh")[:400]) + " UNIQLO 1.5% abc" * 50
    assert _C.jieba_lcut(s) == jieba.lcut(s)


# ---- Japanese: MeCab --------------------------------------------------------------------------------------


def mecab_reference(sents):
    """`mecab -Owakati` with the dictionary our MeCab uses (fugashi with the same one if the command is absent)."""
    info = _C.mecab_info()
    dic = ["-d", info["dicdir"]] if info["dicdir"] else []
    if shutil.which("mecab"):
        out = subprocess.run(["mecab", "-Owakati", *dic], input="\n".join(sents) + "\n", capture_output=True,
                             text=True, check=True).stdout.split("\n")
        return [line.split() for line in out[: len(sents)]]
    import fugashi

    rc = "/etc/mecabrc" if os.path.exists("/etc/mecabrc") else "/dev/null"
    tagger = fugashi.GenericTagger(" ".join(["-r", rc, *dic]))
    return [[w.surface for w in tagger(s)] for s in sents]


def test_stsb_ja_identical_to_mecab():
    sents = stsb_sentences("ja")
    ref = mecab_reference(sents)
    ours = [cp.segment(s, lang="ja") for s in sents]
    diffs = [(s, a, b) for s, a, b in zip(sents, ours, ref) if a != b]
    for s, a, b in diffs:
        print("DIFF", repr(s), "\n  ours ", a, "\n  mecab", b)
    assert not diffs and len(sents) == 3000
    assert cp.segment_batch(sents, lang="ja") == ref
    for s, r in zip(sents, ref):  # auto: kana -> ja; whole when every chunk has kana or Han
        if _C.segment_detect(s) == "ja" and all(_C.segment_detect(c) != "none" for c in s.split()):
            assert cp.segment(s) == r, s


def test_ja_mixed():
    assert cp.segment("白い シャツ　を着た UNIQLO の T-shirt") == ["白い", "シャツ", "を", "着", "た", "UNIQLO", "の",
                                                                   "T-shirt"]
    assert cp.segment("白い シャツ　を着た UNIQLO の T-shirt", "ja") == mecab_reference(
        ["白い シャツ　を着た UNIQLO の T-shirt"])[0]


# ---- errors -----------------------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(cp.TokenizerError):
        cp.segment(b"\xe7\x99 abc")
    with pytest.raises(cp.TokenizerError):
        _C.jieba_lcut(b"ab\xff")
    with pytest.raises(cp.TokenizerError):
        cp.segment("a\ud800b")
    for bad in ("", "   ", "\u3000\n"):
        with pytest.raises(cp.EmptyPromptError):
            cp.segment(bad)
        with pytest.raises(cp.EmptyPromptError):
            cp.segment(bad, "zh")
    for lang in ("fr", "ZH", "", 3):
        with pytest.raises(cp.InvalidArgumentError):
            cp.segment("红色", lang=lang)
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError
        cp.segment_batch(["红色"], lang="xx")
    with pytest.raises(cp.EmptyPromptError, match="text 1"):
        cp.segment_batch(["红色", " ", "白色"])
    with pytest.raises(cp.TokenizerError):
        cp.segment_batch(["红色", b"\xff"])
    with pytest.raises(cp.InvalidArgumentError):
        cp.add_word("")
    with pytest.raises(cp.InvalidArgumentError):
        cp.add_word("词", -1)
    with pytest.raises(cp.FileAccessError):
        cp.load_userdict("/nonexistent/userdict.txt")
    with pytest.raises(TypeError):
        cp.segment(None)
    assert _C.jieba_lcut("") == []


# ---- threads ----------------------------------------------------------------------------------------------


def test_threads_segment_while_adding_words():
    zh, ja = stsb_sentences("zh")[:600], stsb_sentences("ja")[:300]
    ref_zh = [cp.segment(s, "zh") for s in zh]
    ref_ja = [cp.segment(s, "ja") for s in ja]
    # words with freq 0 change neither routes nor the total: results must not move while the table grows
    rng = random.Random(7)
    han = HAN[:60]
    new_words = sorted({"".join(rng.choice(han) for _ in range(6)) for _ in range(12000)})
    errors = []

    def reader(k):
        try:
            for _ in range(2):
                if [cp.segment(s, "zh") for s in zh] != ref_zh:
                    errors.append(f"zh changed in thread {k}")
                if [cp.segment(s, "ja") for s in ja] != ref_ja:
                    errors.append(f"ja changed in thread {k}")
                if cp.segment_batch(zh, "zh") != ref_zh:
                    errors.append(f"zh batch changed in thread {k}")
        except Exception as e:
            errors.append(repr(e))

    def writer():
        try:
            for w in new_words:
                cp.add_word(w, 0)
        except Exception as e:
            errors.append(repr(e))

    before = _C.jieba_info()["entries"]
    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in new_words:  # mirror into jieba
        jieba.add_word(w, 0)
    assert not errors, errors
    assert _C.jieba_info()["entries"] > before + 20000  # the table was rehashed under the readers
    assert _C.jieba_info()["entries"] == len(jieba.dt.FREQ)
    assert _C.jieba_info()["total"] == jieba.dt.total


# ---- user words (mutate the dictionary: mirrored into jieba) ----------------------------------------------


def test_add_word_like_jieba():
    sents = ["他是云计算和大数据方面的专家", "我们在台中的创新办上班", "这款石墨烯手机壳很好用",
             "今天吃了螺蛳粉和酸辣粉",
             "我爱北京天安门", "小明硕士毕业于中国科学院计算所"]
    words = [("云计算", None), ("石墨烯手机壳", None), ("螺蛳粉和酸", 7), ("创新办", 3), ("天安门", 0), ("计算所",
                                                                                                         None)]
    for w, f in words:
        expect = jieba.suggest_freq(w, False) if f is None else f
        got = cp.add_word(w, f)
        jieba.add_word(w, f)
        assert got == expect, w
        assert _C.jieba_freq(w) == jieba.dt.FREQ[w]
        assert _C.jieba_info()["total"] == jieba.dt.total
        assert _C.jieba_suggest_freq(w) == jieba.suggest_freq(w, False)
    for s in sents + PRODUCT_PROMPTS:
        assert _C.jieba_lcut(s) == jieba.lcut(s), s
    assert "石墨烯手机壳" in cp.segment("这款石墨烯手机壳很好用")
    # freq 0 forces a split even where the HMM would join the characters (jieba's Force_Split_Words)
    cp.add_word("杭研", 0)
    jieba.add_word("杭研", 0)
    s = "他来到了网易杭研大厦"
    assert _C.jieba_lcut(s) == jieba.lcut(s) and "杭研" not in _C.jieba_lcut(s)


def test_load_userdict_like_jieba(tmp_path):
    p = tmp_path / "user.txt"
    p.write_bytes(("\ufeff云计算平台 5\n创新工场 3 nt\n凯特琳 nz\n台中市长\n\n  easy install 3 eng  \n"
                   "a b c\n量子计算机 12\n八一双鹿 100 nz\n").encode("utf-8"))
    cp.load_userdict(str(p))
    jieba.load_userdict(str(p))
    for w in ["云计算平台", "创新工场", "凯特琳", "台中市长", "easy install", "a b", "量子计算机", "八一双鹿"]:
        assert _C.jieba_freq(w) == jieba.dt.FREQ.get(w), w
    assert _C.jieba_info()["total"] == jieba.dt.total
    for s in ["李小福是创新工场的主任也是云计算平台方面的专家", "台中市长和凯特琳在讨论量子计算机",
              "八一双鹿更名为八一南昌"]:
        assert _C.jieba_lcut(s) == jieba.lcut(s), s
    for s in stsb_sentences("zh")[:500]:
        assert _C.jieba_lcut(s) == jieba.lcut(s), s
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe bad\n")
    with pytest.raises(cp.InvalidArgumentError, match="utf-8"):
        cp.load_userdict(bad)


# ---- missing dependencies (fresh interpreters: the loaders run once per process) ----------------------------


def run_py(code, **env):
    import sys

    e = dict(os.environ, **env)
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=e,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_missing_mecab_dictionary_is_a_dependency_error():
    out = run_py("import clipprompt as cp\n"
                 "print(cp.segment('红色 连衣裙'))\n"
                 "for _ in range(2):\n"
                 "    try:\n"
                 "        cp.segment('白いシャツ')\n"
                 "    except cp.DependencyError as e:\n"
                 "        print('DependencyError', e)\n",
                 MECAB_DICDIR="/nonexistent/mecab-dic")
    lines = out.splitlines()
    assert lines[0] == "['红色', '连衣裙']"
    assert len(lines) == 3 and all("DependencyError" in x and "apt install libmecab2 mecab-ipadic-utf8" in x
                                   for x in lines[1:]), out


def test_missing_jieba_data_is_a_file_access_error():
    out = run_py("import clipprompt as cp\n"
                 "print(cp.segment('a photo of a cat'))\n"
                 "try:\n"
                 "    cp.segment('红色连衣裙')\n"
                 "except cp.FileAccessError as e:\n"
                 "    print('FileAccessError', e)\n",
                 CLIPPROMPT_JIEBA_DIR="/nonexistent/jieba")
    assert out.splitlines()[0] == "['a', 'photo', 'of', 'a', 'cat']"
    assert "FileAccessError" in out and "/nonexistent/jieba/dict.txt" in out, out


def test_load_userdict_file_objects(tmp_path):
    import io

    text = "深度学习框架 8\n向量数据库 n\n"
    cp.load_userdict(io.BytesIO(text.encode("utf-8")))
    jieba.load_userdict(io.BytesIO(text.encode("utf-8")))
    p = tmp_path / "u2.txt"
    p.write_text("提示词工程 20 n\n", encoding="utf-8")
    with open(p, encoding="utf-8") as f:  # a text-mode file: read() gives str
        cp.load_userdict(f)
    with open(p, "rb") as f:
        jieba.load_userdict(f)
    for w in ["深度学习框架", "向量数据库", "提示词工程"]:
        assert _C.jieba_freq(w) == jieba.dt.FREQ.get(w), w
    assert _C.jieba_info()["total"] == jieba.dt.total
    s = "用深度学习框架和向量数据库做提示词工程"
    assert _C.jieba_lcut(s) == jieba.lcut(s) and "提示词工程" in cp.segment(s)
    with pytest.raises(TypeError):
        cp.load_userdict(12)


def test_bundled_data_is_the_converter_output(tmp_path):
    """clipprompt/data/jieba is exactly what csrc/tools/convert_jieba_hmm.py makes from the installed jieba."""
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, os.path.join(root, "csrc", "tools", "convert_jieba_hmm.py"), "--out",
                    str(tmp_path)], check=True, capture_output=True)
    for name in ("hmm_model.txt", "dict.txt"):
        with open(os.path.join(root, "clipprompt", "data", "jieba", name), "rb") as f:
            assert (tmp_path / name).read_bytes() == f.read(), name
