"""pipeline.inputs.concat_rows: the rows of several annotation files as one frame, a repeated path refused."""

from __future__ import annotations

import pandas as pd
import pytest

from froq_ray.errors import UserError
from froq_ray.pipeline.inputs import concat_rows


class RowsError(UserError):
    pass


def test_rows_of_all_frames_in_order_with_a_fresh_index():
    a = pd.DataFrame({"path": ["/x/1.jpg", "/x/2.jpg"], "quality": [0.5, None]}, index=[7, 3])
    b = pd.DataFrame({"path": ["/y/1.jpg"], "quality": [0.25]}, index=[0])
    rows = concat_rows([a, b], RowsError)
    assert rows["path"].tolist() == ["/x/1.jpg", "/x/2.jpg", "/y/1.jpg"]
    assert rows.index.tolist() == [0, 1, 2]
    assert (
        rows["quality"].iloc[0] == 0.5
        and pd.isna(rows["quality"].iloc[1])
        and rows["quality"].iloc[2] == 0.25
    )


def test_a_repeated_path_names_the_count_and_the_first_repeat():
    a = pd.DataFrame({"path": ["/x/1.jpg", "/x/2.jpg", "/x/3.jpg"]})
    b = pd.DataFrame({"path": ["/x/3.jpg", "/x/2.jpg", "/x/2.jpg"]})
    # rows 3, 4 and 5 repeat an earlier path; the first of them is /x/3.jpg
    with pytest.raises(RowsError) as info:
        concat_rows([a, b], RowsError)
    assert str(info.value) == "3 path(s) appear more than once across the annotations, e.g. /x/3.jpg"
    with pytest.raises(RowsError) as info:
        concat_rows([b], RowsError, where="in the annotations")
    assert str(info.value) == "1 path(s) appear more than once in the annotations, e.g. /x/2.jpg"
