"""The multiple-choice adapters (MMAU, MMAR, MMSU, MuchoMusic, MMAU-Pro) read tiny fixtures in their benchmarks'
own released formats, resolve audio paths, list missing or unreadable audio, and score predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afnext.errors import ConfigError, DataError
from afnext.evaluation.benchmarks import (
    MMAR,
    MMAU,
    MMSU,
    Benchmark,
    MMAUPro,
    MuchoMusic,
    score_file,
)
from tests.evaluation.files import FakeJudge, write_audio, write_csv, write_jsonl

MMAU_RECORDS = [
    {
        "id": "u1",
        "audio_id": "./test-mini-audios/u1.wav",
        "question": "Who speaks?",
        "choices": ["Man", "Woman", "Child", "Robot"],
        "answer": "Man",
        "dataset": "AudioSet",
        "task": "sound",
        "split": "test-mini",
        "category": "Reasoning",
        "sub-category": "Acoustic Source Inference",
        "difficulty": "medium",
    },
    {
        "id": "u2",
        "audio_id": "./test-mini-audios/u2.wav",
        "question": "Which genre?",
        "choices": ["Jazz", "Rock"],
        "answer": "Rock",
        "dataset": "MusicCaps",
        "task": "music",
        "split": "test-mini",
        "category": "Information Extraction",
        "sub-category": "Genre",
        "difficulty": "easy",
    },
]


def test_mmau_reads_its_release_resolves_audio_and_lists_missing_files(tmp_path):
    (tmp_path / "mmau-test-mini.json").write_text(json.dumps(MMAU_RECORDS))
    write_audio(tmp_path / "test-mini-audios" / "u1.wav")
    mmau = MMAU(root=tmp_path)
    assert isinstance(mmau, Benchmark)
    items = mmau.read()
    assert [i.id for i in items] == ["u1", "u2"]
    assert items[0].audio == [tmp_path / "test-mini-audios" / "u1.wav"]
    assert items[0].messages == [
        {
            "role": "user",
            "content": "<sound>\nWho speaks?\nChoose the correct option from the following options:\n"
            "(A) Man\n(B) Woman\n(C) Child\n(D) Robot",
        }
    ]
    assert items[1].answer_index == 1 and items[0].meta["task"] == "sound"
    assert items[0].raw == MMAU_RECORDS[0]
    report = mmau.audio_report(items)
    assert report["missing"] == 1
    assert report["files"] == [
        {"id": "u2", "path": str(tmp_path / "test-mini-audios" / "u2.wav"), "reason": "missing"}
    ]
    (tmp_path / "test-mini-audios" / "u2.wav").write_text("not audio")
    (bad,) = mmau.missing_audio(items)
    assert bad["id"] == "u2" and bad["reason"].startswith("unreadable")


def test_prompt_template_is_configurable_and_checked(tmp_path):
    mmau = MMAU(
        prompt={"system": "Be brief.", "option": "{letter}. {text}", "option_separator": " "}
    )
    (item,) = mmau.items(MMAU_RECORDS[1:])
    assert item.messages[0] == {"role": "system", "content": "Be brief."}
    assert item.messages[1]["content"].endswith("A. Jazz B. Rock")
    with pytest.raises(ConfigError, match=r"prompt.user must hold exactly one <sound>"):
        MMAU(prompt={"user": "{question}"})
    with pytest.raises(ConfigError, match="unknown keys"):
        MMAU(prompt={"usr": "<sound>"})
    with pytest.raises(ConfigError, match="cannot be filled"):
        MMAU(prompt={"user": "<sound>{nope}"}).items(MMAU_RECORDS[1:])


def test_root_is_needed_to_read_and_ids_must_be_unique(tmp_path):
    with pytest.raises(ConfigError, match=r"benchmark\.root"):
        MMAU().read()
    with pytest.raises(DataError, match="appears twice"):
        MMAU().items([MMAU_RECORDS[0], MMAU_RECORDS[0]], source="f.json")
    with pytest.raises(DataError, match=r"f.json item 1: no field 'choices'"):
        MMAU().items(
            [{"id": "x", "audio_id": "a", "question": "q", "answer": "a"}], source="f.json"
        )


def test_mmar_reads_jsonl(tmp_path):
    record = {
        "id": "m1",
        "audio_path": "./audio/m1.wav",
        "question": "Where?",
        "choices": ["Forest", "City"],
        "answer": "City",
        "modality": "mix-sound-speech",
        "category": "Semantic Layer",
        "sub-category": "Content Analysis",
        "language": "en",
        "source": "youtube",
    }
    write_jsonl(tmp_path / "MMAR-meta.jsonl", [record])
    write_audio(tmp_path / "audio" / "m1.wav")
    (item,) = MMAR(root=tmp_path).read()
    assert item.audio == [tmp_path / "audio" / "m1.wav"]
    assert item.meta == {
        "modality": "mix-sound-speech",
        "category": "Semantic Layer",
        "sub-category": "Content Analysis",
    }
    assert MMAR(root=tmp_path).missing_audio([item]) == []


def test_mmsu_official_letters_and_final_answer(tmp_path):
    base = {
        "audio_path": "audio/s.wav",
        "question": "Tone?",
        "choice_a": "rising",
        "choice_b": "falling",
        "choice_c": "",
        "choice_d": "",
        "task_name": "tone",
        "category": "Perception",
        "sub-category": "Phonology",
    }
    records = [
        {**base, "id": "s1", "answer_gt": "rising", "response": "A"},
        {**base, "id": "s2", "answer_gt": "falling", "response": "The answer is B."},
        {**base, "id": "s3", "answer_gt": "falling", "response": "falling, clearly"},  # not counted
        {**base, "id": "s4", "answer_gt": "rising"},  # no response: skipped
    ]
    path = write_jsonl(tmp_path / "mmsu.jsonl", records)
    items = MMSU(root=tmp_path, file="mmsu.jsonl").read()  # the official script's records
    assert items[0].choices == ["rising", "falling"]  # trailing empty options dropped
    assert "A. rising\nB. falling" in items[0].messages[0]["content"]
    result = score_file(MMSU(), path)
    assert (result["official"]["correct"], result["official"]["total"]) == (2, 2)
    assert result["official"]["not_counted"] == 1
    assert (result["final_answer"]["correct"], result["final_answer"]["total"]) == (3, 3)
    assert result["skipped"] == 1


def test_muchomusic_csv_finds_audio_like_the_official_code_and_shuffles_reproducibly(tmp_path):
    rows = [
        {
            "question": "What instrument leads?",
            "dataset": "sdd",
            "genre": "jazz",
            "music_reasoning": "['harmony']",
            "music_knowledge": "['instrumentation', 'genre']",
            "dataset_identifier": "123.json",
            "correct_answer": "Saxophone",
            "distractor_1_answer": "Trumpet",
            "distractor_2_answer": "A slow tempo",
            "distractor_3_answer": "Bagpipes",
        },
        {
            "question": "Mood?",
            "dataset": "musiccaps",
            "genre": "",
            "music_reasoning": "",
            "music_knowledge": "['mood']",
            "dataset_identifier": "a_b-c_7.json",
            "correct_answer": "Calm",
            "distractor_1_answer": "Angry",
            "distractor_2_answer": "Fast",
            "distractor_3_answer": "Loud",
        },
    ]
    write_csv(tmp_path / "muchomusic.csv", rows)
    (tmp_path / "sdd").mkdir()
    write_csv(tmp_path / "sdd" / "song_describer.csv", [{"track_id": "123", "path": "12/123.mp3"}])
    (tmp_path / "musiccaps").mkdir()
    write_csv(
        tmp_path / "musiccaps" / "musiccaps-public.csv",
        [{"ytid": "a_b-c", "start_s": "30", "end_s": "40"}],
    )
    items = MuchoMusic(root=tmp_path, seed=3).read()
    assert items[0].audio == [tmp_path / "sdd" / "audio" / "12" / "123.2min.mp3"]
    assert items[1].audio == [tmp_path / "musiccaps" / "audio" / "[a_b-c]-[30-40].wav"]
    assert items[0].choices[items[0].answer_index] == "Saxophone"
    assert items[0].meta["knowledge"] == ["instrumentation", "genre"]
    again = MuchoMusic(root=tmp_path, seed=3).read()
    assert [i.choices for i in again] == [i.choices for i in items]
    assert sorted(items[0].choices) == sorted(["Saxophone", "Trumpet", "A slow tempo", "Bagpipes"])
    assert {i.id for i in items} == {"0", "1"}
    assert MuchoMusic(root=tmp_path).audio_report(items)["missing"] == 2
    (tmp_path / "musiccaps" / "musiccaps-public.csv").unlink()
    with pytest.raises(DataError, match=r"musiccaps-public\.csv"):
        MuchoMusic(root=tmp_path).read()
    # the CSV with a model_output column scores without the root (same seed, same option order)
    scored = [
        {**row, "model_output": f"({'ABCD'[item.answer_index]})"} for row, item in zip(rows, items)
    ]
    result = score_file(MuchoMusic(seed=3), write_csv(tmp_path / "outputs.csv", scored))
    assert (result["official"]["correct"], result["final_answer"]["correct"]) == (2, 2)


def test_muchomusic_scores_the_official_prompts_file(tmp_path):
    prompts = [
        {
            "id": "123",
            "prompt": "Question: What leads?\n Options: (A) Trumpet ...\n The correct answer is: ",
            "answers": ["Trumpet", "Saxophone", "Bagpipes", "A slow tempo"],
            "answer_orders": [1, 0, 3, 2],
            "dataset": "sdd",
            "genre": "jazz",
            "reasoning": [],
            "knowledge": ["instrumentation"],
            "audio_path": "data/sdd/audio/1.mp3",
            "model_output": "(B)",
        },
        {
            "id": "123",
            "prompt": "...",
            "answers": ["Calm", "Angry", "Fast", "Loud"],
            "answer_orders": [0, 1, 2, 3],
            "dataset": "sdd",
            "genre": "jazz",
            "reasoning": ["mood"],
            "knowledge": [],
            "audio_path": "data/sdd/audio/1.mp3",
            "model_output": "<think>Option D? No.</think>calm",
        },  # the one letter D decides
    ]
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(prompts))
    items = MuchoMusic().items(json.loads(path.read_text()))
    assert (
        items[0]
        .messages[0]["content"]
        .startswith("<sound>\nQuestion: What leads?\n Options: (A) Trumpet")
    )
    assert items[1].messages[0]["content"].startswith("<sound>\nQuestion: ...")
    result = score_file(MuchoMusic(), path)
    assert (result["official"]["correct"], result["official"]["total"]) == (1, 2)
    assert (result["final_answer"]["correct"], result["final_answer"]["total"]) == (2, 2)
    assert result["official"]["breakdown"]["knowledge"]["instrumentation"]["correct"] == 1


MMAU_PRO_RECORDS = [
    {
        "id": "p1",
        "audio_path": ["data/p1.wav"],
        "question": "Which?",
        "choices": ["Dog", "Cat"],
        "answer": "Dog",
        "category": "sound",
        "model_output": "<think>cat?</think>A",
    },
    {
        "id": "p2",
        "audio_path": ["data/p2a.wav", "data/p2b.wav"],
        "question": "Same speaker?",
        "choices": ["Yes", "No"],
        "answer": "No",
        "category": "multi",
        "model_output": "Yes",
    },
    {
        "id": "p3",
        "audio_path": ["data/p3.wav"],
        "question": "Describe it.",
        "choices": [],
        "answer": "Rain on a roof.",
        "category": "open",
        "model_output": "Rain falling.",
    },
    {
        "id": "p4",
        "audio_path": ["data/p4.wav"],
        "question": "Answer in capitals.",
        "choices": None,
        "answer": "",
        "category": "instruction following",
        "task_identifier": "All Uppercase",
        "kwargs": {},
        "model_output": "OK",
    },
]


def test_mmau_pro_splits_closed_open_and_instruction_items(tmp_path):
    records = MMAU_PRO_RECORDS
    path = write_jsonl(tmp_path / "test.jsonl", records)
    pro = MMAUPro(root=tmp_path, file="test.jsonl")
    items = pro.read()
    assert items[1].audio == [tmp_path / "data" / "p2a.wav", tmp_path / "data" / "p2b.wav"]
    assert items[1].messages[0]["content"].startswith("<sound>\n<sound>\nSame speaker?")
    assert items[2].messages[0]["content"] == "<sound>\nDescribe it."
    judge = FakeJudge([4])
    result = pro.score(items, {r["id"]: r["model_output"] for r in records}, judge=judge)
    assert judge.items == [
        {
            "question": "Describe it.",
            "reference": "Rain on a roof.",
            "prediction": "Rain falling.",
            "expected_answer": "Rain on a roof.",  # NeMo-Skills' names, for its prompts
            "generation": "Rain falling.",
        }
    ]
    assert (result["official"]["correct"], result["final_answer"]["correct"]) == (0, 1)
    assert result["official"]["total"] == 2
    assert result["open"]["score"] == pytest.approx(80.0)  # 4 / 5
    following = result["instruction_following"]
    assert (following["items"], following["correct"], following["score"]) == (1, 1, 100.0)
    assert following["by_constraint"] == {"All Uppercase": {"correct": 1, "total": 1}}
    assert following["unknown_constraints"] == 0 and "NeMo-Skills" in following["rule"]
    assert result["overall"]["final_answer"] == {  # closed 1 of 2, open 4 / 5, instruction 1 of 1
        "score": pytest.approx(100 * (1 + 0.8 + 1) / 4),
        "parts": ["closed", "open", "instruction_following"],
    }
    assert result["overall"]["official"]["score"] == pytest.approx(100 * (0 + 0.8 + 1) / 4)
    assert any("NV-Embed" in note for note in result["notes"])
    no_judge = score_file(MMAUPro(), path)
    assert no_judge["open"]["score"] is None and no_judge["overall"]["official"]["parts"] == [
        "closed",
        "instruction_following",
    ]


def _write_parquet(path, records):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(
        dict.fromkeys(k for r in records for k in r)
    )  # every column, null where a row lacks it
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in records]), path)
    return path


def test_mmau_pro_reads_its_parquet_release(tmp_path):
    """test.parquet as released (audio_path a list, choices a list) reads and scores as its JSON-lines export
    does (``kwargs`` left out: parquet cannot hold the empty struct)."""
    records = [{k: v for k, v in r.items() if k != "kwargs"} for r in MMAU_PRO_RECORDS]
    _write_parquet(tmp_path / "test.parquet", records)
    write_jsonl(tmp_path / "test.jsonl", records)
    write_audio(tmp_path / "data" / "p1.wav")
    from_parquet = MMAUPro(root=tmp_path).read()
    from_jsonl = MMAUPro(root=tmp_path, file="test.jsonl").read()
    assert [(i.id, i.audio, i.choices, i.messages, i.meta) for i in from_parquet] == [
        (i.id, i.audio, i.choices, i.messages, i.meta) for i in from_jsonl
    ]
    assert from_parquet[1].audio == [tmp_path / "data" / "p2a.wav", tmp_path / "data" / "p2b.wav"]
    assert [m["path"] for m in MMAUPro(root=tmp_path).missing_audio(from_parquet)] == [
        str(tmp_path / "data" / x) for x in ("p2a.wav", "p2b.wav", "p3.wav", "p4.wav")
    ]
    scores = score_file(MMAUPro(), tmp_path / "test.parquet", judge=FakeJudge([4]))
    exported = score_file(MMAUPro(), tmp_path / "test.jsonl", judge=FakeJudge([4]))
    assert {**scores, "predictions_file": None} == {**exported, "predictions_file": None}
    assert scores["final_answer"]["correct"] == 1
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable parquet file"):
        MMAUPro(root=tmp_path, file="bad.parquet").read()


def _mmsu_row(ident: str, audio: dict, answer: str = "rising") -> dict:
    """A row of the Hugging Face release (ddwang2000/MMSU): the clip embedded as datasets' Audio stores it."""
    return {
        "id": ident,
        "audio": audio,
        "question": "Tone?",
        "choice_a": "rising",
        "choice_b": "falling",
        "choice_c": "level",
        "choice_d": "dipping",
        "answer_gt": answer,
        "task_name": "tone_recognition",
        "category": "Perception",
        "sub-category": "Phonology",
        "sub-sub-category": "Prosody",
        "linguistics_sub_discipline": "Phonology",
    }


def test_mmsu_reads_the_hugging_face_release_with_its_audio_embedded(tmp_path):
    import soundfile

    clip = write_audio(tmp_path / "src" / "a.flac", seconds=0.3).read_bytes()
    other = write_audio(tmp_path / "src" / "b.wav", seconds=0.2).read_bytes()
    root = tmp_path / "MMSU"
    write_audio(
        root / "clips" / "c.wav"
    )  # a row whose bytes are not embedded: its path, under the root
    _write_parquet(
        root / "data" / "train-00000-of-00002.parquet",
        [
            _mmsu_row("m1", {"bytes": clip, "path": "m1.flac"}),
            _mmsu_row("m2", {"bytes": other, "path": "m2.wav"}, answer="falling"),
        ],
    )
    _write_parquet(
        root / "data" / "train-00001-of-00002.parquet",
        [
            _mmsu_row("m3", {"bytes": None, "path": "clips/c.wav"}),
            _mmsu_row("m4", {"bytes": b"not audio at all", "path": "m4.wav"}),
        ],
    )
    cache = tmp_path / "cache"
    mmsu = MMSU(root=root, audio_cache=cache)
    items = mmsu.read()
    assert [i.id for i in items] == ["m1", "m2", "m3", "m4"]
    assert items[0].audio[0].parent == cache and items[0].audio[0].suffix == ".flac"
    assert items[0].audio[0].read_bytes() == clip and items[1].audio[0].read_bytes() == other
    assert soundfile.info(str(items[0].audio[0])).frames == int(0.3 * 16000)
    assert items[2].audio == [root / "clips" / "c.wav"]
    assert items[1].reference == "falling" and items[0].choices[2] == "level"
    assert items[0].meta == {
        "category": "Perception",
        "sub-category": "Phonology",
        "task_name": "tone_recognition",
    }
    assert "A. rising\nB. falling\nC. level\nD. dipping" in items[0].messages[0]["content"]
    missing = mmsu.missing_audio(items)  # the clip that does not decode is listed, not dropped
    assert [(m["id"], m["reason"].split(":")[0]) for m in missing] == [("m4", "unreadable")]

    # read again: the same files, not written twice
    stamp = items[0].audio[0].stat().st_mtime_ns
    again = MMSU(root=root, audio_cache=cache).read()
    assert [i.audio for i in again] == [i.audio for i in items]
    assert items[0].audio[0].stat().st_mtime_ns == stamp
    assert len(list(cache.iterdir())) == 3

    # one id in two of the files: an error that names the glob
    _write_parquet(
        root / "data" / "extra.parquet", [_mmsu_row("m1", {"bytes": clip, "path": "x.flac"})]
    )
    with pytest.raises(DataError, match=r"'m1' appears in two of the 3 files"):
        MMSU(root=root, audio_cache=cache).read()
    _write_parquet(
        tmp_path / "empty" / "x.parquet", [_mmsu_row("e", {"bytes": None, "path": None})]
    )
    with pytest.raises(
        DataError,
        match=r"x\.parquet row 1, column 'audio': embedded audio with neither bytes nor a path",
    ):
        MMSU(root=tmp_path / "empty", audio_cache=cache).read()
    # a row whose audio struct is null: an error naming the row, not a question without its clip
    _write_parquet(tmp_path / "null" / "x.parquet", [_mmsu_row("n", None)])
    with pytest.raises(DataError, match=r"x\.parquet item 1: its audio is None"):
        MMSU(root=tmp_path / "null", audio_cache=cache).read()
    # a cache folder that cannot be written: said so, not "unreadable parquet"
    (tmp_path / "blocker").write_text("a file where the cache folder would go")
    with pytest.raises(
        DataError, match=r"row 1, column 'audio': cannot write its audio to .*audio_cache"
    ):
        MMSU(root=root, audio_cache=tmp_path / "blocker" / "cache").read()
    with pytest.raises(DataError, match=r"\*\*/\*\.parquet: no file matches"):
        MMSU(root=tmp_path / "src", audio_cache=cache).read()


def test_embedded_audio_lists_keep_their_nulls(tmp_path):
    from afnext.evaluation.benchmarks.base import write_embedded_audio

    clip = write_audio(tmp_path / "a.wav").read_bytes()
    out = write_embedded_audio([{"bytes": clip, "path": "a.wav"}, None], tmp_path / "cache")
    assert out[1] is None and Path(out[0]).read_bytes() == clip
    assert write_embedded_audio(["x.wav", None], tmp_path / "cache") == ["x.wav", None]
