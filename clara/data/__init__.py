"""Documents and datasets: importing sources (`clara.data.sources`) and what is built from them."""
