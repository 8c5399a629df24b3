"""OGC exception responses: WMS 1.1.1/1.3.0 and WCS 1.0.0/2.0.1 XML reports, INIMAGE and BLANK images.

Only the error's public message is written; the HTTP status is the error's own (400/404/502),
except INIMAGE and BLANK, which are images and answer 200 as clients expect.
"""

from __future__ import annotations

import io

from fastapi import Response
from lxml import etree
from PIL import Image, ImageDraw

from server.errors import EotilerError

OGC_NS = "http://www.opengis.net/ogc"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/tiff": "TIFF"}


def wms_exception_xml(error: EotilerError, version: str) -> Response:
    """A ServiceExceptionReport in the version's own dialect."""
    code = error.ogc_code
    if version == "1.1.1" and code == "InvalidCRS":
        code = "InvalidSRS"
    if version == "1.1.1":
        root = etree.Element("ServiceExceptionReport", version="1.1.1")
        media_type = "application/vnd.ogc.se_xml"
        doctype = '<!DOCTYPE ServiceExceptionReport SYSTEM "http://schemas.opengis.net/wms/1.1.1/exception_1_1_1.dtd">'
    else:
        root = etree.Element(
            f"{{{OGC_NS}}}ServiceExceptionReport", nsmap={None: OGC_NS, "xsi": XSI_NS}, version="1.3.0"
        )
        root.set(f"{{{XSI_NS}}}schemaLocation", f"{OGC_NS} http://schemas.opengis.net/wms/1.3.0/exceptions_1_3_0.xsd")
        media_type = "text/xml"
        doctype = None
    tag = "ServiceException" if version == "1.1.1" else f"{{{OGC_NS}}}ServiceException"
    item = etree.SubElement(root, tag)
    if code != "NoApplicableCode":
        item.set("code", code)
    if error.parameter and version != "1.1.1":  # the 1.1.1 DTD has no locator attribute
        item.set("locator", error.parameter)
    item.text = error.public_message
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8", doctype=doctype)
    return Response(body, status_code=error.status, media_type=media_type)


OWS_NS = "http://www.opengis.net/ows/1.1"


# WMTS 1.0.0 knows the OWS Common codes plus TileOutOfRange; a WMS-style code (an unknown layer,
# style, format or dimension value) is an InvalidParameterValue, its locator naming the parameter.
_WMTS_CODES = {
    "OperationNotSupported",
    "MissingParameterValue",
    "InvalidParameterValue",
    "VersionNegotiationFailed",
    "InvalidUpdateSequence",
    "NoApplicableCode",
    "TileOutOfRange",
}


def ows_exception_xml(error: EotilerError, version: str = "1.0.0") -> Response:
    """An OWS 1.1 ExceptionReport (WMTS)."""
    code = error.ogc_code if error.ogc_code in _WMTS_CODES else "InvalidParameterValue"
    return _ows_report(error, code, OWS_NS, "1.1.0", version)


def _ows_report(error: EotilerError, code: str, ns: str, schema_version: str, version: str) -> Response:
    """An OWS ExceptionReport (1.1 for WMTS, 2.0 for WCS 2.0.1)."""
    root = etree.Element(f"{{{ns}}}ExceptionReport", nsmap={"ows": ns, "xsi": XSI_NS}, version=version)
    root.set(
        f"{{{XSI_NS}}}schemaLocation", f"{ns} http://schemas.opengis.net/ows/{schema_version}/owsExceptionReport.xsd"
    )
    item = etree.SubElement(root, f"{{{ns}}}Exception", exceptionCode=code)
    if error.parameter:
        item.set("locator", error.parameter)
    etree.SubElement(item, f"{{{ns}}}ExceptionText").text = error.public_message
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return Response(body, status_code=error.status, media_type="application/xml")


OWS20_NS = "http://www.opengis.net/ows/2.0"
# WCS 1.0.0 knows only these codes; the rest become InvalidParameterValue.
_WCS10_CODES = {"InvalidFormat", "CoverageNotDefined", "MissingParameterValue", "InvalidParameterValue"}
_WCS10_RENAMES = {"NoSuchCoverage": "CoverageNotDefined", "LayerNotDefined": "CoverageNotDefined"}
_WCS20_RENAMES = {
    "LayerNotDefined": "NoSuchCoverage",
    "CoverageNotDefined": "NoSuchCoverage",
    "InvalidDimensionValue": "InvalidSubsetting",
    "InvalidFormat": "InvalidParameterValue",
}


def wcs_exception_xml(error: EotilerError, version: str) -> Response:
    """WCS 1.0.0: an OGC ServiceExceptionReport 1.2.0; WCS 2.0.1: an OWS 2.0 ExceptionReport."""
    code = error.ogc_code
    if version == "1.0.0":
        code = _WCS10_RENAMES.get(code, code)
        if code not in _WCS10_CODES and code != "NoApplicableCode":
            code = "InvalidParameterValue"
        root = etree.Element(
            f"{{{OGC_NS}}}ServiceExceptionReport", nsmap={None: OGC_NS, "xsi": XSI_NS}, version="1.2.0"
        )
        root.set(f"{{{XSI_NS}}}schemaLocation", f"{OGC_NS} http://schemas.opengis.net/wcs/1.0.0/OGC-exception.xsd")
        item = etree.SubElement(root, f"{{{OGC_NS}}}ServiceException")
        if code != "NoApplicableCode":
            item.set("code", code)
        if error.parameter:
            item.set("locator", error.parameter)
        item.text = error.public_message
        body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        return Response(body, status_code=error.status, media_type="application/vnd.ogc.se_xml")
    if code == "InvalidCRS":
        code = "OutputCrs-NotSupported" if error.parameter == "OUTPUTCRS" else "SubsettingCrs-NotSupported"
    return _ows_report(error, _WCS20_RENAMES.get(code, code), OWS20_NS, "2.0", "2.0.1")


def _image(width: int, height: int, media_type: str, rgba: tuple[int, int, int, int], text: str | None) -> Response:
    width, height = max(1, min(width, 4096)), max(1, min(height, 4096))
    fmt = _IMAGE_FORMATS.get(media_type, "PNG")
    mode = "RGB" if fmt == "JPEG" else "RGBA"
    image = Image.new(mode, (width, height), rgba[:3] if mode == "RGB" else rgba)
    if text:
        draw = ImageDraw.Draw(image)
        words, lines, line = text.split(), [], ""
        for word in words:
            if len(line) + len(word) + 1 > max(10, width // 7):
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for i, content in enumerate(lines[: max(1, height // 14)]):
            draw.text((4, 4 + 14 * i), content, fill=(200, 0, 0, 255))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return Response(out.getvalue(), media_type=media_type if fmt != "PNG" else "image/png")


def inimage_exception(error: EotilerError, width: int, height: int, media_type: str) -> Response:
    """The error message drawn into an image of the requested size and format."""
    return _image(width, height, media_type, (255, 255, 255, 0), error.public_message)


def blank_exception(width: int, height: int, media_type: str, background: tuple[int, int, int] | None) -> Response:
    """An empty image (BGCOLOR when TRANSPARENT=FALSE, else transparent)."""
    rgba = (*background, 255) if background else (255, 255, 255, 0)
    return _image(width, height, media_type, rgba, None)


__all__ = ["blank_exception", "inimage_exception", "ows_exception_xml", "wcs_exception_xml", "wms_exception_xml"]
