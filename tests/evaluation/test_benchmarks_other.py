"""The other adapters (LongAudioBench, LibriSpeech, AudioCaps, Clotho, CoVoST 2, TACoT) read tiny fixtures in
their benchmarks' own released formats, resolve audio paths, list missing audio, and score predictions."""

from __future__ import annotations

import json

import pytest

from afnext.errors import ConfigError, DataError
from afnext.evaluation.benchmarks import (
    AudioCaps,
    Clotho,
    CoVoST2,
    LibriSpeech,
    LongAudioBench,
    TACoT,
    read_predictions,
    score_file,
)
from tests.evaluation.files import FakeJudge, write_audio, write_csv, write_jsonl


def test_longaudiobench_af3_style_records_and_judge(tmp_path):
    records = [
        {
            "id": "l1",
            "sound": "long/l1.wav",
            "category": "speech",
            "conversations": [
                {"from": "human", "value": "<sound>\nWhat happens at the end?"},
                {"from": "gpt", "value": "The crowd cheers."},
            ],
        },
        {
            "id": "l2",
            "sound": "long/l2.wav",
            "category": "sound",
            "conversations": [
                {"from": "human", "value": "How many dogs bark?<sound>"},
                {"from": "gpt", "value": "Two."},
            ],
        },
        {"id": "l3", "sound": "long/l3.wav", "question": "Who talks?", "answer": "Anna"},
    ]
    (tmp_path / "longaudiobench.json").write_text(json.dumps(records))
    write_audio(tmp_path / "long" / "l1.wav")
    bench = LongAudioBench(root=tmp_path, breakdown=["category"])
    items = bench.read()
    assert items[1].messages[0]["content"] == "<sound>\nHow many dogs bark?"
    assert [m["id"] for m in bench.missing_audio(items)] == ["l2", "l3"]
    judge = FakeJudge([8, None])
    result = bench.score(items, {"l1": "<think>...</think>They cheer.", "l2": "two"}, judge=judge)
    assert judge.items[0] == {
        "question": "What happens at the end?",
        "reference": "The crowd cheers.",
        "prediction": "They cheer.",
    }
    assert result["score"] == pytest.approx(80.0) and result["judge"]["failed"] == 1
    assert (result["scored"], result["skipped"]) == (2, 1)
    assert result["breakdown"]["category"] == {
        "speech": {"score": pytest.approx(80.0), "judged": 1}
    }
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"id": "l1", "output": "x"}])
    assert score_file(bench, predictions)["score"] is None  # no judge: reported unscored


def test_librispeech_release_layout_and_wer(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "test-clean" / "1089" / "134686"
    chapter.mkdir(parents=True)
    (chapter / "1089-134686.trans.txt").write_text(
        "1089-134686-0000 HE HOPED THERE WOULD BE STEW FOR DINNER\n1089-134686-0001 STUFF IT INTO YOU\n"
    )
    write_audio(chapter / "1089-134686-0000.flac")
    bench = LibriSpeech(root=tmp_path, subset="test-clean")
    items = bench.read()
    assert [i.id for i in items] == ["1089-134686-0000", "1089-134686-0001"]
    assert items[0].audio == [chapter / "1089-134686-0000.flac"]
    assert items[0].messages[0]["content"] == "<sound>\nTranscribe the input speech."
    assert bench.audio_report(items)["missing"] == 1
    predictions = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "1089-134686-0000", "prediction": "He hoped there would be stew for dinner."},
            {"id": "1089-134686-0001", "prediction": "Stuff it in to you"},
        ],
    )
    result = score_file(bench, predictions)
    assert result["wer"] == pytest.approx(
        100 * 2 / 12
    )  # "into" -> "in to": 1 sub + 1 ins over 12 words
    assert LibriSpeech(root=tmp_path / "LibriSpeech").read()[0].id == "1089-134686-0000"
    with pytest.raises(DataError, match="test-other"):
        LibriSpeech(root=tmp_path, subset="test-other").read()
    with pytest.raises(DataError, match="not items of this benchmark"):
        bench.score(items, {"nope": "x"})


def test_audiocaps_groups_captions_per_clip(tmp_path):
    rows = [
        {"audiocap_id": str(k), "youtube_id": clip, "start_time": "30", "caption": cap}
        for k, (clip, cap) in enumerate(
            [("yt1", "A dog barks."), ("yt2", "Rain falls."), ("yt1", "A dog is barking loudly.")]
        )
    ]
    write_csv(tmp_path / "test.csv", rows)
    write_audio(tmp_path / "audio" / "yt1.wav")
    bench = AudioCaps(root=tmp_path)
    items = bench.read()
    assert [(i.id, i.reference) for i in items] == [
        ("yt1", ["A dog barks.", "A dog is barking loudly."]),
        ("yt2", ["Rain falls."]),
    ]
    assert [m["id"] for m in bench.missing_audio(items)] == ["yt2"]
    result = bench.score(items, {"yt1": "a dog barks", "yt2": "rain falls"})
    assert result["CIDEr-D"] > 0 and result["BLEU-1"] == pytest.approx(1.0)
    assert "METEOR" in result["unavailable"]
    assert AudioCaps(root=tmp_path, audio="clips/Y{youtube_id}_{start_time}.wav").read()[
        0
    ].audio == [tmp_path / "clips" / "Yyt1_30.wav"]


def test_clotho_reads_five_captions(tmp_path):
    rows = [{"file_name": "rain.wav", **{f"caption_{k}": f"rain falls {k}" for k in range(1, 6)}}]
    write_csv(tmp_path / "clotho_captions_evaluation.csv", rows)
    write_audio(tmp_path / "evaluation" / "rain.wav")
    bench = Clotho(root=tmp_path)
    (item,) = bench.read()
    assert item.audio == [tmp_path / "evaluation" / "rain.wav"] and len(item.reference) == 5
    assert bench.missing_audio([item]) == []
    assert bench.score([item], {"rain.wav": "rain falls"})["ROUGE-L"] > 0


def test_covost2_tsv_and_bleu(tmp_path):
    rows = [
        {
            "path": "common_voice_en_1.mp3",
            "sentence": "Hello there, how are you all today?",
            "translation": "Hallo zusammen, wie geht es euch allen heute?",
            "client_id": "c1",
        },
        {
            "path": "common_voice_en_2.mp3",
            "sentence": "Thanks a lot for the help.",
            "translation": "Vielen Dank für die Hilfe.",
            "client_id": "c2",
        },
    ]
    write_csv(tmp_path / "covost_v2.en_de.test.tsv", rows, delimiter="\t")
    bench = CoVoST2(root=tmp_path)
    items = bench.read()
    assert items[0].audio == [tmp_path / "clips" / "common_voice_en_1.mp3"]
    assert items[0].messages[0]["content"] == "<sound>\nTranslate the English speech into German."
    assert len(bench.missing_audio(items)) == 2
    predictions = {i.id: f"<think>translate</think>{i.reference}" for i in items}
    result = bench.score(items, predictions)
    assert result["bleu"] == pytest.approx(100.0) and "tok:13a" in result["signature"]
    with pytest.raises(ConfigError, match="not offered"):
        CoVoST2(tokenize="moses")


def test_covost2_tsv_escapes_as_its_scripts_write_them(tmp_path):
    """get_covost_splits.py writes with pandas' to_csv(sep="\\t", quoting=QUOTE_NONE, escapechar="\\\\") (the
    csv module's writer): quotes and backslashes are escaped; the references are the texts, not the escapes."""
    import csv

    texts = ['Er sagte „Hallo" zu mir.', "Ein Rück\\strich", "Tab\tim Satz"]
    path = tmp_path / "covost_v2.en_de.test.tsv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(["path", "sentence", "translation", "client_id"])
        for k, text in enumerate(texts):
            writer.writerow([f"c{k}.mp3", "x", text, "c"])
    assert '\\"' in path.read_text()  # the file holds the escapes
    items = CoVoST2(root=tmp_path).read()
    assert [i.reference for i in items] == texts
    result = CoVoST2(root=tmp_path).score(items, {i.id: i.reference for i in items})
    assert result["bleu"] == pytest.approx(100.0)


def test_tacot_manifest_and_score_outputs(tmp_path):
    line = {
        "id": "s0-0",
        "sound": "audio/s0.wav",
        "duration": 10.0,
        "conversations": [
            {"from": "human", "value": "<sound>\nWhich comes first?"},
            {"from": "gpt", "value": "<think>\nThe tone <t>1-2</t>.\n</think>\n(A) tone"},
        ],
        "timeline": [
            {"onset": 1.0, "offset": 2.0, "label": "tone", "kind": "sound"},
            {"onset": 5.0, "offset": 6.0, "label": "melody", "kind": "music"},
        ],
        "question_type": "order",
        "answer": "(A) tone",
        "choices": ["tone", "melody"],
        "evidence": [[1.0, 2.0]],
        "mode": "think",
        "split": "test",
    }
    write_jsonl(tmp_path / "test.jsonl", [line])
    write_audio(tmp_path / "audio" / "s0.wav")
    bench = TACoT(root=tmp_path)
    (item,) = bench.read()
    assert item.messages == [{"role": "user", "content": "<sound>\nWhich comes first?"}]
    assert item.audio == [tmp_path / "audio" / "s0.wav"] and item.choices == ["tone", "melody"]
    predictions = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "s0-0", "output": line["conversations"][1]["value"]}]
    )
    result = score_file(bench, predictions)
    assert result["overall"]["accuracy"] == 1.0 and result["overall"]["span_precision"] == 1.0
    assert result["by_question_type"]["order"]["samples"] == 1


def test_predictions_files_are_checked(tmp_path):
    bad = write_jsonl(tmp_path / "p.jsonl", [{"id": "a"}])
    with pytest.raises(DataError, match="needs 'id' and one of"):
        read_predictions(bad)
    twice = write_jsonl(
        tmp_path / "q.jsonl", [{"id": "a", "prediction": "x"}, {"id": "a", "text": "y"}]
    )
    with pytest.raises(DataError, match="appears twice"):
        read_predictions(twice)
    (tmp_path / "r.json").write_text('[{"id": 1, "pred": "x"}]')
    assert read_predictions(tmp_path / "r.json") == {"1": "x"}
