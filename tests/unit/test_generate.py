from datetime import date

import numpy as np
import pandas as pd

from jobs.demo.generate import CHUNK_ROWS, chunks, generate_day, label_days


def test_same_seed_and_day_give_identical_rows(spec, generator):
    # given / when
    a = generate_day(generator, spec, date(2026, 1, 10), 500, seed=1)
    b = generate_day(generator, spec, date(2026, 1, 10), 500, seed=1)
    # then
    pd.testing.assert_frame_equal(a.features, b.features)
    pd.testing.assert_frame_equal(a.labels, b.labels)


def test_another_seed_or_day_changes_the_rows(spec, generator):
    base = generate_day(generator, spec, date(2026, 1, 10), 500, seed=1).features
    other_seed = generate_day(generator, spec, date(2026, 1, 10), 500, seed=2).features
    other_day = generate_day(generator, spec, date(2026, 1, 11), 500, seed=1).features
    assert not base["monthly_charges"].equals(other_seed["monthly_charges"])
    assert not base["monthly_charges"].equals(other_day["monthly_charges"])


def test_a_day_has_one_row_per_subscriber_and_the_declared_columns(spec, generator):
    day = generate_day(generator, spec, date(2026, 1, 10), 1234, seed=3)
    f = day.features
    assert len(f) == 1234 and f[spec.key].is_unique
    assert list(f.columns) == [spec.key, *spec.features.all, "dt"]
    assert 15 <= len(spec.features.all) <= 25
    assert set(day.labels[spec.label.column].unique()) <= {0, 1}


def test_subscribers_keep_their_traits_across_days(spec, generator):
    d1 = generate_day(generator, spec, date(2026, 1, 10), 300, seed=3).features
    d2 = generate_day(generator, spec, date(2026, 1, 11), 300, seed=3).features
    assert (d1["region"] == d2["region"]).all()
    assert np.allclose(d2["tenure_months"] - d1["tenure_months"], 1 / 30, atol=0.011)


def test_chunks_cover_every_row_once():
    assert chunks(CHUNK_ROWS * 2 + 7) == [(0, CHUNK_ROWS), (1, CHUNK_ROWS), (2, 7)]
    assert sum(n for _, n in chunks(123_456)) == 123_456


def test_scheduled_events_happen_on_their_dates(spec, generator):
    ev = generator.events
    before = generate_day(generator, spec, date(2026, 1, 20), 5000, seed=4).features
    after = generate_day(generator, spec, ev.new_category.start, 5000, seed=4).features
    assert ev.new_category.value not in set(before[ev.new_category.feature])
    assert (after[ev.new_category.feature] == ev.new_category.value).mean() > ev.new_category.share / 2
    incident = generate_day(generator, spec, ev.quality_incident.date, 5000, seed=4).features
    assert before[ev.quality_incident.feature].isna().sum() == 0
    assert incident[ev.quality_incident.feature].isna().mean() > ev.quality_incident.null_share / 2


def test_labels_become_known_after_the_delay_and_not_before_first_day(spec, generator):
    gen, data = generator, spec
    published = [date(2026, 1, 15), date(2026, 1, 31), date(2026, 2, 10)]
    assert label_days(gen, data, published) == [date(2026, 1, 1), date(2026, 1, 11)]
    label = generate_day(gen, data, date(2026, 1, 1), 10, seed=1).labels
    assert (label["available_at"] == date(2026, 1, 31)).all()
