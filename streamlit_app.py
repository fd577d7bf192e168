"""The dashboard: ``streamlit run streamlit_app.py``.

A multipage app (``st.navigation`` over the files in ``app_pages/``) on top of :mod:`siamese_core`.
The page files deliberately do not live in ``pages/``: Streamlit treats a ``pages/`` folder next to
the entry script as an old-style (v1) multipage app until ``st.navigation`` first runs, so the first
request after a server start to a deep link (``/triplets``) would run the page without this entry.
This entry runs on every page: it sets up the page, makes a small synthetic dataset on a fresh
workspace, and keeps the active dataset and run in the sidebar, in session state and in the URL
(``?dataset=…&run=…``).
"""

import streamlit as st

st.set_page_config(page_title="Same place? · Siamese tiles", page_icon=":material/satellite_alt:",
                   layout="wide", initial_sidebar_state="expanded")

from app_pages import ui  # noqa: E402  (after set_page_config)

nav = st.navigation({
    "Data": [
        st.Page(ui.PAGES["home"], title="Home / data", icon=":material/home:", url_path="home", default=True),
        st.Page(ui.PAGES["triplets"], title="Triplets", icon=":material/grid_view:", url_path="triplets"),
        st.Page(ui.PAGES["pairs"], title="Pairs", icon=":material/compare_arrows:", url_path="pairs"),
    ],
    "Model": [
        st.Page(ui.PAGES["train"], title="Train", icon=":material/model_training:", url_path="train"),
        st.Page(ui.PAGES["compare"], title="Compare", icon=":material/image_search:", url_path="compare"),
        st.Page(ui.PAGES["search"], title="Search", icon=":material/travel_explore:", url_path="search"),
        st.Page(ui.PAGES["map"], title="Map", icon=":material/scatter_plot:", url_path="map"),
        st.Page(ui.PAGES["batch"], title="Batch", icon=":material/table_rows:", url_path="batch"),
        st.Page(ui.PAGES["threshold"], title="Threshold", icon=":material/tune:", url_path="threshold"),
    ],
}, expanded=True)
ui.bootstrap()
ui.show_flash()
nav.run()
