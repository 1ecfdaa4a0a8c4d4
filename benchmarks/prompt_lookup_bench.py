"""Prompt lookup decoding on the CPU: generate(..., prompt_lookup_num_tokens=k) against plain greedy search, on
the notebook's two real summaries.

    python benchmarks/prompt_lookup_bench.py                       # distilbart and kobart shapes, k = 3, 5, 10
    python benchmarks/prompt_lookup_bench.py --models distilbart --rounds 1 --tag quick

How often a guess holds is the model's and the text's, which random weights cannot show. So each run's output is
forced to a real summary: the seed notebook's, printed by sshleifer/distilbart-cnn-12-6 for its New Brompton F.C.
paragraph and by EbanLee/kobart-summary-v3 for its 1896 Olympics text, by a logits processor that leaves only that
summary's next token (the same processor in both runs; a processor of one's own turns the greedy LM-head screen
off, so both runs compute every logit). Everything else is generate as it runs: the real lookup over the real
source (tokenized as the pipeline does), passes over the full-size shape (make_checkpoints.py; a pass costs what
its widths cost whatever the weights), the search. The notebook's summaries came from beam search; a greedy run of
those models copies the source alike but is not the same text, so the counts are a proxy for greedy's.

Reported per model and k: tokens, passes with a guess and the tokens they took, ms per generated token and the
speed-up over plain greedy (medians of --rounds rounds, each running every mode in turn), and the outputs'
equality.
Worst case, also measured: the random-weight model's own greedy output (no forcing), whose guesses seldom hold, so
the passes cost and save nothing.
`--k draft` runs assisted decoding instead (generate(assistant_model=...), generation/draft.py) with the model
loaded in int8 as the draft. Forced, the draft reads the same processor, so it always agrees: the ceiling, what its
steps and the checking passes cost when every guess holds; unforced, a random model's int8 copy agrees little
(near-ties everywhere), the floor.
Writes benchmarks/results/prompt-lookup-cpu-<date>[-<tag>].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT)]

from machine import machine_line  # noqa: E402
from make_checkpoints import ensure  # noqa: E402

# the seed notebook's inputs and the summaries it printed
SOURCES = {
    "distilbart": (
        "During the 1905–06 English football season, New Brompton F.C. competed in the Southern League Division "
        "One. It was the 12th season in which the club competed in the Southern League and the 11th in Division "
        "One. The team began the season in poor form; they failed to score any goals in six of their first eight "
        "Southern League games. By the midpoint of the season, the team had won only three times and were close to "
        "the bottom of the league table. The team's form improved in the new year, with three wins in the first "
        "seven Southern League games of 1906, but they ended the season in similar fashion to how they had started "
        "it, failing to score in eight of the final nine league games. New Brompton finished the season in 17th "
        "place out of 18 teams in the division.\n\nNew Brompton also competed in the FA Cup, reaching the second "
        "round. The team played a total of 37 league and cup matches, winning 8, drawing 9 and losing 20. Bill "
        "Marriott was the club's top goalscorer, with four goals in the Southern League and one in the FA Cup; this "
        "figure was the lowest to date with which a player had finished a season as New Brompton's top scorer. Joe "
        "Walton made the most appearances, playing in 36 of the team's 37 competitive games. The highest "
        "attendance recorded at the club's home ground, Priestfield Road, was 5,500 for a game against Portsmouth "
        "on 27 January 1906.",
        " During the 1905–06 English football season, New Brompton F.C. competed in the Southern League Division "
        "One . It was the club's 12th season in which the club competed . The team began the season in poor form, "
        "failing to score any goals in six of their first eight league games . The highest attendance at "
        "Priestfield Road was 5,500 for a game against Portsmouth on 27 January 1906 ."),
    "kobart": (
        "1896년 하계 올림픽(영어: 1896 Summer Olympics, Games of the I Olympiad, 그리스어: Θερινοί Ολυμπιακοί "
        "Αγώνες 1896)은 393년을 마지막으로 끝난 고대 올림픽 대회 이후 열린 첫 근대 올림픽 대회다. 1896년 4월 6일부터 "
        "4월 15일까지 그리스 아테네에서 개최되었다. 고대 그리스가 올림픽의 발상지여서 첫 근대 올림픽이 열리기에 적당한 "
        "장소였던 아테네는 1894년 6월 23일에 파리에서, 프랑스의 역사학자인 쿠베르탱이 주관한 올림픽 의회에서 만장일치로 "
        "개최지 자격을 얻었다. 또한 하계 올림픽이 진행되는 동안 국제 올림픽 위원회(IOC)가 조직되었다.\n\n여러 어려움을 "
        "이겨낸 1회 올림픽은 성공적인 평가를 받았다. 당시의 국제 경기 중에서는 이 대회가 가장 많은 국제적인 참여를 "
        "이끌어냈다. 19세기 때 유일한 올림픽 경기장으로 쓰인 파나티나이코 경기장은 경기를 보려는 사람들이 몰려서 "
        "인산인해를 이루었다.[2] 개최국인 그리스에게 있어서 가장 절정이었던 부분은 마라톤 경기에서 자국 선수인 스피리돈 "
        "루이스가 승리의 영광을 차지한 것이었다. 이 대회에서는 카를 슈만이 레슬링과 체조에서 4개의 금메달을 따서 가장 "
        "많은 금메달을 획득했다. 가장 많이 메달을 딴 선수는 헤르만 바인게르트너로 6개의 메달을 땄다.\n\n대회가 끝난 후 "
        "IOC는 이후의 올림픽을 계속 그리스에서 개최할 것인가를 놓고 피에르 드 쿠베르탱 남작과 그리스 임금인 요르요스 "
        "1세, 몇몇 미국 선수들 사이에서 갈등이 있었으나 1900년 대회가 이미 파리에서 열리기로 결정된 상태였고, 이후 "
        "올림픽은 세계를 순환하면서 개최하게 된다. 1906년 중간 올림픽을 제외하고는 그리스는 2004년 하계 올림픽을 "
        "개최할 때까지 108년간 올림픽을 개최하지 못했다.",
        "1896년 하계 올림픽은 고대 올림픽 대회 이후 열린 첫 근대 올림픽 대회로 아테네에서 개최되었다."),
}


DRAFT = "int8 draft"     # a --k value: generate(assistant_model=<the model loaded in int8>) instead of a lookup


class Force:
    """A logits processor that leaves only `truth`'s token at each position (the output becomes truth)."""

    def __init__(self, truth: list[int]):
        self.truth = truth

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.truth[input_ids.shape[1]]] = 0.0
        return forced


class Passes:
    """A streamer recording how many tokens each pass took (prompt lookup puts each pass's tokens at once)."""

    def __init__(self):
        self.taken, self.first = [], True

    def put(self, value: torch.Tensor) -> None:
        if not self.first:
            self.taken.append(value.numel())
        self.first = False

    def end(self) -> None:
        pass


def counted(model):
    """Wrap model.extend_unchecked to record each pass's width; returns the list it fills."""
    widths = []
    extend = model.extend_unchecked

    def wrapped(fed, *args, **kwargs):
        widths.append(fed.shape[1])
        return extend(fed, *args, **kwargs)
    model.extend_unchecked = wrapped
    return widths


def run_model(name: str, ks: list, rounds: int) -> dict:
    from seq2seq_kit import BartForConditionalGeneration, Tokenizer

    path = ensure(name)
    tok, model = Tokenizer.from_pretrained(path), BartForConditionalGeneration.from_pretrained(path)
    draft = BartForConditionalGeneration.from_pretrained(path, dtype="int8") if DRAFT in ks else None
    source, summary = SOURCES[name]
    enc = tok(source, truncation=True, max_length=model.config.max_position_embeddings, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    start = [model.generation_config.decoder_start_token_id]
    forced_bos = model.generation_config.forced_bos_token_id
    truth = start + ([forced_bos] if forced_bos is not None else []) + \
        tok(summary, add_special_tokens=False)["input_ids"] + [model.generation_config.eos_token_id]
    widths = counted(model)
    rows = []
    for forced in (True, False):
        kwargs = dict(num_beams=1, do_sample=False, no_repeat_ngram_size=0, min_length=0)
        if forced:
            kwargs.update(max_new_tokens=len(truth) - 1, logits_processor=[Force(truth)])
        else:
            kwargs.update(max_new_tokens=100)
        modes = [None] + ks                                   # None: plain greedy; each k a prompt lookup run
        times = {mode: [] for mode in modes + ["encoder"]}
        outs, passes = {}, {}
        for _ in range(rounds):                               # the modes in turn, so each sees the same machine
            began = time.perf_counter()
            model.encode(ids, mask)
            times["encoder"].append(time.perf_counter() - began)
            for mode in modes:
                widths.clear()
                passes[mode] = Passes()
                lookup = {} if mode is None else dict(streamer=passes[mode], **(
                    dict(assistant_model=draft) if mode == DRAFT else dict(prompt_lookup_num_tokens=mode)))
                began = time.perf_counter()
                outs[mode] = model.generate(ids, mask, **kwargs, **lookup)
                times[mode].append(time.perf_counter() - began)
                passes[mode].guessed = len(widths)
        plain, encoder = statistics.median(times[None]), statistics.median(times["encoder"])
        new = outs[None].shape[1] - 1
        for k in ks:
            lookup = statistics.median(times[k])
            single = len(passes[k].taken) - passes[k].guessed  # passes without a guess: one plain step, one token
            rows.append(dict(model=name, output="notebook summary (forced)" if forced else "random weights' own",
                             k=k, tokens=new, source_tokens=ids.shape[1], passes_with_guess=passes[k].guessed,
                             tokens_in_those_passes=sum(passes[k].taken) - single, single_steps=single,
                             plain_s=plain, lookup_s=lookup, encoder_s=encoder,
                             plain_ms_per_token=1000 * (plain - encoder) / new,
                             lookup_ms_per_token=1000 * (lookup - encoder) / new,
                             speedup=plain / lookup, decode_speedup=(plain - encoder) / (lookup - encoder),
                             same=outs[None].tolist() == outs[k].tolist()
                             and (not forced or outs[None][0].tolist() == truth)))
            print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict], machine: str) -> str:
    lines = [f"# Prompt lookup decoding, CPU ({date.today()})", "", f"Machine: {machine}", "",
             "| model | output | k | tokens | passes with a guess (tokens they took) | single steps | decoding ms/token: "
             "greedy | prompt lookup | speed-up | end to end s: greedy | prompt lookup | speed-up | same tokens |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['output']} | {r['k']} | {r['tokens']} | {r['passes_with_guess']} "
                     f"({r['tokens_in_those_passes']}) | {r['single_steps']} | {r['plain_ms_per_token']:.1f} | "
                     f"{r['lookup_ms_per_token']:.1f} | {r['decode_speedup']:.2f}x | {r['plain_s']:.2f} | "
                     f"{r['lookup_s']:.2f} | {r['speedup']:.2f}x | {'yes' if r['same'] else 'NO'} |")
    lines += ["", "Decoding ms/token: (end to end - the encoder pass, timed alone) / tokens. The forced runs "
              "compute every logit in both modes (a logits processor of one's own turns the greedy screen off)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="distilbart,kobart")
    parser.add_argument("--k", default="3,5,10", help="prompt_lookup_num_tokens values, and `draft`: the model in "
                        "int8 as its own assistant_model (generation/draft.py)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [row for name in args.models.split(",")
            for row in run_model(name, [DRAFT if k == "draft" else int(k) for k in args.k.split(",")], args.rounds)]
    machine = machine_line()
    stem = f"prompt-lookup-cpu-{date.today()}" + (f"-{args.tag}" if args.tag else "")
    out = ROOT / "results"
    (out / f"{stem}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(rows, machine))
    print(markdown(rows, machine))
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
