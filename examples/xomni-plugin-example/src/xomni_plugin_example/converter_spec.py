"""The descriptor of the example converter, which the ``xomni.converters`` entry point names."""

from xomni_core.convert import ConverterOption, ConverterSpec

CONVERTER = ConverterSpec(
    name="preview-csv",
    description="a latent-to-RGB projection as CSV (projection.csv: 3 rows, one weight per channel)",
    implementation="xomni_plugin_example.converters:convert_preview_csv",
    options=(
        ConverterOption(
            name="pixels_per_token", help="side of the block each token becomes (default 16)", metavar="N"
        ),
    ),
)
